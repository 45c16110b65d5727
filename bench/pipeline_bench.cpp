// `make bench`: the reference workload every later benchmark compares on.
//   MLP of 8 x [Linear(1024,1024) + ReLU], batch 1024, m = 8 micro-batches, p = 2 stages,
//   one BLAS / intra-op thread per rank (OPENBLAS_NUM_THREADS=1).
// Measured in one run, as ratios: single process on the whole batch; single process doing the
// same 8 micro-batches serially; tpipe GPipe and 1F1B over 2 processes; each against the GPipe
// bound = (serial micro-batch time / 2) x (m + p - 1) / m. Also stage 0's peak stashed activations.
//
// The orchestrator (no --mode) runs itself in worker modes and prints the table:
//   tpipe_bench --mode local                          -> single and serial step times
//   tpipe run -n 2 -- tpipe_bench --mode pipe --schedule gpipe
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "tpipe/engine.h"

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

nlohmann::json run_pipe(const Workload& w, const std::string& schedule) {
  auto comm = tpipe::Communicator::from_env();
  tpipe::EngineOptions o;
  o.schedule = schedule;
  o.microbatches = w.microbatches;
  o.layer_seed = 0;
  tpipe::PipelineEngine engine(
      model(w), [](const tpipe::Payload& out, const tpipe::Payload& t) { return loss_fn(out[0], t[0]); }, sgd, *comm, o);
  torch::manual_seed(1);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  std::int64_t peak = 0;
  const double step = time_steps(w, [&] { peak = engine.train_batch({x}, {y}).peak_activation_bytes; });
  return {{"step_s", step}, {"peak_bytes", peak}, {"stage", engine.stage()}};
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
  Workload w;
  app.add_option("--mode", mode, "worker mode: local | pipe (empty: run everything and print the table)");
  app.add_option("--schedule", schedule, "pipe mode: gpipe | 1f1b | naive");
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
      const auto r = run_pipe(w, schedule);
      if (r["stage"] == 0) std::cout << "BENCH " << r.dump() << std::endl;
      return 0;
    }
    const std::string self = argv[0];
    const std::string common = " --steps " + std::to_string(w.steps) + " --batch " + std::to_string(w.batch);
    std::cout << "workload: " << w.layers << " x [Linear(" << w.width << "," << w.width << ")+ReLU], batch " << w.batch
              << ", m = " << w.microbatches << ", p = 2, OPENBLAS_NUM_THREADS=1, median of " << w.steps << " steps\n\n";
    const auto local = run_child("OPENBLAS_NUM_THREADS=1 " + self + " --mode local" + common);
    nlohmann::json pipe;
    for (const char* s : {"gpipe", "1f1b"})
      pipe[s] = run_child("OPENBLAS_NUM_THREADS=1 " + tpipe_cmd + " run -n 2 -- " + self + " --mode pipe --schedule " +
                          s + common);
    const double serial = local["serial_s"], single = local["single_s"];
    const int m = w.microbatches, p = 2;
    const double bound = serial / p * (m + p - 1) / m;
    auto row = [&](const char* name, double t, const std::string& note) {
      std::printf("%-38s %9.3f s   %6.2fx bound   %s\n", name, t, t / bound, note.c_str());
    };
    std::printf("%-38s %11s   %12s\n", "configuration", "step time", "vs bound");
    row("single process, whole batch", single, "");
    row("single process, 8 micro-batches serial", serial, "");
    row("GPipe bound (serial/2 x (m+p-1)/m)", bound, "");
    for (const char* s : {"gpipe", "1f1b"}) {
      const std::string name = std::string("tpipe ") + s + ", 2 processes";
      row(name.c_str(), pipe[s]["step_s"], "speed-up vs serial " + std::to_string(serial / double(pipe[s]["step_s"])).substr(0, 4) + "x");
    }
    std::printf("\npeak stashed activations, stage 0:  gpipe %.1f MiB   1f1b %.1f MiB\n",
                double(pipe["gpipe"]["peak_bytes"]) / (1 << 20), double(pipe["1f1b"]["peak_bytes"]) / (1 << 20));
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
