// `make bench`: the reference workload every later benchmark compares on.
//   MLP of 8 x [Linear(1024,1024) + ReLU], batch 1024, m = 8 micro-batches, p = 2 stages,
//   one BLAS / intra-op thread per rank (OPENBLAS_NUM_THREADS=1).
// Measured in one run, as ratios: single process on the whole batch; single process doing the
// same 8 micro-batches serially; tpipe GPipe and 1F1B over 2 processes; pure data parallelism
// over 2; pp=2 x dp=2 over 4; each against the GPipe bound = (serial micro-batch time / 2) x
// (m + p - 1) / m, with the all-reduce's share of the step. Also stage 0's peak activations.
//
// The orchestrator (no --mode) runs itself in worker modes and prints the table:
//   tpipe_bench --mode local                          -> single and serial step times
//   tpipe run -n 2 -- tpipe_bench --mode pipe --schedule gpipe
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "tpipe/engine.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/svg.h"
#include "tpipe/util/files.h"

namespace {

struct Workload {
  int layers = 8, width = 1024, batch = 1024, microbatches = 8, warmup = 2, steps = 5;
};

std::vector<tpipe::LayerSpec> model(const Workload& w) {
  std::vector<tpipe::LayerSpec> specs;
  for (int i = 0; i < w.layers; ++i)
    specs.push_back(tpipe::layer("fc" + std::to_string(i), [=] {
      return torch::nn::Sequential(torch::nn::Linear(w.width, w.width), torch::nn::ReLU());
    }));
  return specs;
}

at::Tensor loss_fn(const at::Tensor& out, const at::Tensor& target) { return torch::mse_loss(out, target); }

std::unique_ptr<torch::optim::Optimizer> sgd(std::vector<at::Tensor> params) {
  return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(1e-3));
}

// Median of the timed steps, in seconds.
template <class Step>
double time_steps(const Workload& w, Step step) {
  std::vector<double> t;
  for (int i = 0; i < w.warmup + w.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= w.warmup) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One process: the whole batch at once, and the same batch as m micro-batches one after another.
nlohmann::json run_local(const Workload& w) {
  torch::manual_seed(0);
  std::vector<tpipe::LayerPtr> layers;
  std::vector<at::Tensor> params;
  for (auto& s : model(w)) {
    layers.push_back(s.factory());
    for (auto& [n, p] : layers.back()->named_parameters()) params.push_back(p);
  }
  auto opt = sgd(params);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  auto forward = [&](tpipe::Payload p) {
    for (auto& l : layers) p = l->forward(p);
    return p[0];
  };
  const double single = time_steps(w, [&] {
    opt->zero_grad();
    loss_fn(forward({x}), y).backward();
    opt->step();
  });
  const auto xs = x.chunk(w.microbatches), ys = y.chunk(w.microbatches);
  const double serial = time_steps(w, [&] {
    opt->zero_grad();
    for (int k = 0; k < w.microbatches; ++k) (loss_fn(forward({xs[k]}), ys[k]) / w.microbatches).backward();
    opt->step();
  });
  return {{"single_s", single}, {"serial_s", serial}};
}

// Measured bubble of the recorded step, and the simulator's prediction for the same schedule with
// the per-op costs measured in that step (mean forward and backward time over all ranks).
// Seconds to record one event the way the engine does: two steady-clock reads and an append.
double per_event_cost() {
  std::vector<tpipe::trace::Event> sink;
  sink.reserve(1 << 20);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < (1 << 20); ++i) {
    const auto a = std::chrono::steady_clock::now().time_since_epoch().count();
    const auto b = std::chrono::steady_clock::now().time_since_epoch().count();
    sink.push_back({0, {}, static_cast<double>(a), static_cast<double>(b), 0, 0, -1});
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (1 << 20);
}

// Measured bubble of a recorded step, and the simulator's replay of the same schedule with the
// measured cost of every action and a message latency estimated from the receives that waited
// (data arrived at the end of the wait; the latency is that minus the end of its send).
nlohmann::json bubble_check(const tpipe::trace::StepTrace& t, const std::string& schedule, int stages, int m) {
  tpipe::Costs c;
  std::map<std::string, const tpipe::trace::Event*> sends;
  for (const auto& e : t.events) {
    if (tpipe::is_compute(e.action.op)) c.by_action[tpipe::to_string(e.action)] = e.end_us - e.start_us;
    if (e.action.op == tpipe::Op::SendAct || e.action.op == tpipe::Op::SendGrad) sends[tpipe::to_string(e.action)] = &e;
  }
  std::vector<double> latency;
  for (const auto& e : t.events) {
    if (e.action.op != tpipe::Op::RecvAct && e.action.op != tpipe::Op::RecvGrad) continue;
    auto it = sends.find(tpipe::to_string(tpipe::matching_comm(e.action)));
    if (it != sends.end() && e.start_us <= it->second->end_us) latency.push_back(e.end_us - it->second->end_us);
  }
  std::sort(latency.begin(), latency.end());
  c.comm = latency.empty() ? 0.0 : std::max(0.0, latency[latency.size() / 2]);
  const auto plan = tpipe::simulate(tpipe::make_schedule(schedule, stages, m), c);
  return {{"bubble_measured", tpipe::trace::measured_bubble(t).overall},
          {"bubble_predicted", plan.bubble},
          {"comm_ms", c.comm / 1000}};
}

nlohmann::json run_pipe(const Workload& w, const std::string& schedule, int dp, bool record,
                        const std::string& timeline) {
  auto comm = tpipe::Communicator::from_env();
  tpipe::EngineOptions o;
  o.schedule = schedule;
  o.microbatches = w.microbatches;
  o.dp = dp;
  o.layer_seed = 0;
  o.record = false;
  tpipe::PipelineEngine engine(
      model(w), [](const tpipe::Payload& out, const tpipe::Payload& t) { return loss_fn(out[0], t[0]); }, sgd, *comm, o);
  torch::manual_seed(1);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  std::int64_t peak = 0;
  double reduce = 0;
  int timed = 0;
  const double step = time_steps(w, [&] {
    const auto r = engine.train_batch({x}, {y});
    peak = r.peak_activation_bytes;
    if (++timed > w.warmup) reduce += r.reduce_seconds;
  });
  // Recording's cost, measured in these processes: steps alternate between on and off (wall
  // clock, as noisy as the machine), and directly: the gather's time plus the events times the
  // cost of recording one (two clock reads and an append, calibrated below).
  double on_s = 0, off_s = 0, gather_s = 0;
  std::size_t events = 0;
  if (record) {
    std::vector<double> on, off;
    for (int i = 0; i < 2 * w.steps; ++i) {
      engine.set_recording(i % 2 == 0);
      const auto r = engine.train_batch({x}, {y});
      (i % 2 == 0 ? on : off).push_back(r.step_seconds);
      if (i % 2 == 0) gather_s += r.gather_seconds / w.steps;
    }
    engine.set_recording(true);
    engine.train_batch({x}, {y});  // the step whose trace is analysed below
    std::sort(on.begin(), on.end());
    std::sort(off.begin(), off.end());
    on_s = on[on.size() / 2];
    off_s = off[off.size() / 2];
    events = engine.last_trace().events.size();
  }
  nlohmann::json out{{"step_s", step}, {"peak_bytes", peak}, {"reduce_s", reduce / w.steps}, {"rank", comm->rank()}};
  if (record) {
    out["record_on_s"] = on_s;
    out["record_off_s"] = off_s;
    out["gather_s"] = gather_s;
    out["events"] = events;
    out["event_s"] = per_event_cost();
  }
  if (record && comm->rank() == 0) {
    out["bubble"] = bubble_check(engine.last_trace(), schedule, engine.num_stages(), w.microbatches);
    if (!timeline.empty())
      tpipe::write_file_atomic(timeline, tpipe::trace::render_timeline_svg(
                                             engine.last_trace(), {"bench · " + schedule + " · measured"}));
  }
  return out;
}

// Runs a command and returns the JSON object it printed after "BENCH ".
nlohmann::json run_child(const std::string& cmd) {
  std::FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  const auto at = out.find("BENCH ");
  if (status != 0 || at == std::string::npos) throw std::runtime_error("`" + cmd + "` failed:\n" + out);
  return nlohmann::json::parse(out.substr(at + 6, out.find('\n', at) - at - 6));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tpipe benchmark: pipelined vs single-process training of the reference MLP"};
  std::string mode, schedule = "gpipe", tpipe_cmd = "tpipe";
  int dp = 1;
  bool record = false;
  std::string timeline;
  Workload w;
  app.add_option("--mode", mode, "worker mode: local | pipe (empty: run everything and print the table)");
  app.add_option("--schedule", schedule, "pipe mode: gpipe | 1f1b | naive");
  app.add_option("--dp", dp, "pipe mode: data-parallel replicas (ranks = 2 x dp / pp)");
  app.add_flag("--record", record, "pipe mode: record every action (as for --trace)");
  app.add_option("--timeline", timeline, "pipe mode with --record: write the last step's SVG timeline");
  app.add_option("--tpipe", tpipe_cmd, "path of the tpipe command (for `tpipe run`)");
  app.add_option("--steps", w.steps, "timed steps per configuration (median is reported)")->capture_default_str();
  app.add_option("--batch", w.batch, "mini-batch size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  try {
    if (mode == "local") {
      std::cout << "BENCH " << run_local(w).dump() << std::endl;
      return 0;
    }
    if (mode == "pipe") {
      const auto r = run_pipe(w, schedule, dp, record, timeline);
      if (r["rank"] == 0) std::cout << "BENCH " << r.dump() << std::endl;
      return 0;
    }
    const std::string self = argv[0];
    const std::string common = " --steps " + std::to_string(w.steps) + " --batch " + std::to_string(w.batch);
    std::cout << "workload: " << w.layers << " x [Linear(" << w.width << "," << w.width << ")+ReLU], batch " << w.batch
              << ", m = " << w.microbatches << ", p = 2, OPENBLAS_NUM_THREADS=1, median of " << w.steps << " steps\n\n";
    const auto local = run_child("OPENBLAS_NUM_THREADS=1 " + self + " --mode local" + common);
    struct Config {
      const char* label;
      const char* schedule;
      int ranks, dp;
      bool record = false;
  std::string timeline;
    };
    const std::vector<Config> configs{{"tpipe gpipe, pp=2", "gpipe", 2, 1},
                                      {"tpipe 1f1b, pp=2", "1f1b", 2, 1},
                                      {"tpipe dp=2 (pp=1)", "1f1b", 2, 2},
                                      {"tpipe 1f1b, pp=2 x dp=2 (4 ranks)", "1f1b", 4, 2},
                                      {"tpipe gpipe, pp=2, recording on/off", "gpipe", 2, 1, true},
                                      {"tpipe 1f1b, pp=2, recording on/off", "1f1b", 2, 1, true}};
    std::vector<nlohmann::json> results;
    for (const auto& c : configs)
      results.push_back(run_child("OPENBLAS_NUM_THREADS=1 " + tpipe_cmd + " run -n " + std::to_string(c.ranks) +
                                  " -- " + self + " --mode pipe --schedule " + c.schedule + " --dp " +
                                  std::to_string(c.dp) + (c.record ? " --record" : "") + common));
    const double serial = local["serial_s"], single = local["single_s"];
    const int m = w.microbatches, p = 2;
    const double bound = serial / p * (m + p - 1) / m;
    std::printf("%-38s %11s   %12s   %s\n", "configuration", "step time", "vs bound", "notes");
    auto row = [&](const std::string& name, double t, const std::string& note) {
      std::printf("%-38s %9.3f s   %6.2fx bound   %s\n", name.c_str(), t, t / bound, note.c_str());
    };
    row("single process, whole batch", single, "");
    row("single process, 8 micro-batches serial", serial, "");
    row("GPipe bound (serial/2 x (m+p-1)/m)", bound, "");
    for (std::size_t i = 0; i < configs.size(); ++i) {
      const double t = results[i]["step_s"], reduce = results[i]["reduce_s"];
      char note[128];
      std::snprintf(note, sizeof note, "%.2fx faster than serial; all-reduce %.1f%% of the step", serial / t,
                    100 * reduce / t);
      row(configs[i].label, t, note);
    }
    std::printf("\n");
    for (int i : {4, 5}) {
      const auto& r = results[i];
      const auto& b = r["bubble"];
      const double direct = double(r["gather_s"]) + double(r["events"]) * double(r["event_s"]);
      std::printf("%s: recording costs %.3f%% of the step: gather %.2f ms + %d events x %.0f ns "
                  "(wall clock, steps alternating on/off: %.3f s vs %.3f s, %+.1f%%, machine noise)\n",
                  configs[i].schedule, 100 * direct / double(r["record_off_s"]), 1000 * double(r["gather_s"]),
                  int(r["events"]), 1e9 * double(r["event_s"]), double(r["record_on_s"]), double(r["record_off_s"]),
                  100 * (double(r["record_on_s"]) / double(r["record_off_s"]) - 1));
      std::printf("%s: bubble measured %.1f%%, simulated with each action's measured cost and a message "
                  "latency of %.2f ms: %.1f%%\n",
                  configs[i].schedule, 100 * double(b["bubble_measured"]), double(b["comm_ms"]),
                  100 * double(b["bubble_predicted"]));
    }
    std::printf("peak stashed activations, stage 0:  gpipe %.1f MiB   1f1b %.1f MiB\n",
                double(results[0]["peak_bytes"]) / (1 << 20), double(results[1]["peak_bytes"]) / (1 << 20));
    std::printf("(the machine has %u cores: 4 ranks share them, so pp=2 x dp=2 is oversubscribed)\n",
                std::thread::hardware_concurrency());
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
