// The worker modes of tpipe_bench (see workers.h).
#include "workers.h"

#include <cstdlib>
#include <map>

#include "tpipe/engine.h"
#include "tpipe/machine/doctor.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/chrome.h"
#include "tpipe/trace/svg.h"
#include "tpipe/util/files.h"

namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Seconds to record one event the way the engine does: two clock reads and an append.
double per_event_cost() {
  std::vector<tpipe::trace::Event> sink;
  sink.reserve(1 << 20);
  const auto t0 = Clock::now();
  for (int i = 0; i < (1 << 20); ++i) {
    const auto a = Clock::now().time_since_epoch().count();
    const auto b = Clock::now().time_since_epoch().count();
    sink.push_back({0, {}, static_cast<double>(a), static_cast<double>(b), 0, 0, -1});
  }
  return std::chrono::duration<double>(Clock::now() - t0).count() / (1 << 20);
}

// Mean duration of each kind of compute action ("0F", "1B", ...) in a recorded step, in ms.
std::map<std::string, double> compute_ms(const tpipe::trace::StepTrace& t) {
  std::map<std::string, std::pair<double, int>> sum;
  for (const auto& e : t.events) {
    if (!tpipe::is_compute(e.action.op)) continue;
    auto& s = sum[std::to_string(e.action.stage) + tpipe::to_string(e.action.op)];
    s.first += (e.end_us - e.start_us) / 1000;
    ++s.second;
  }
  std::map<std::string, double> out;
  for (const auto& [k, s] : sum) out[k] = s.first / s.second;
  return out;
}

// The bubble of the forward/backward part of a recorded step, measured, and the simulator's
// replay of the same schedule with every action's measured cost (computing, and starting each
// send) and a message latency estimated
// from the receives that waited (the data arrived at the end of the wait; the latency is that
// minus the end of its send). Both span the first forward's start to the last backward's end,
// which is what the simulator models (the optimizer after it is not part of the bubble).
std::pair<double, double> bubbles(const tpipe::trace::StepTrace& t, const tpipe::Schedule& schedule, double* comm_ms) {
  tpipe::Costs c;
  std::map<std::string, const tpipe::trace::Event*> sends;
  double first = 1e300, last = -1e300, busy = 0;
  for (const auto& e : t.events) {
    if (tpipe::is_compute(e.action.op)) {
      c.by_action[tpipe::to_string(e.action)] = e.end_us - e.start_us;
      first = std::min(first, e.start_us);
      last = std::max(last, e.end_us);
      busy += e.end_us - e.start_us;
    }
    if (e.action.op == tpipe::Op::SendAct || e.action.op == tpipe::Op::SendGrad) {
      sends[tpipe::to_string(e.action)] = &e;
      c.by_action[tpipe::to_string(e.action)] = e.end_us - e.start_us;  // starting a send costs too
    }
  }
  std::vector<double> latency;
  for (const auto& e : t.events) {
    if (e.action.op != tpipe::Op::RecvAct && e.action.op != tpipe::Op::RecvGrad) continue;
    auto it = sends.find(tpipe::to_string(tpipe::matching_comm(e.action)));
    if (it != sends.end() && e.start_us <= it->second->end_us) latency.push_back(e.end_us - it->second->end_us);
  }
  c.comm = std::max(0.0, median(latency));
  *comm_ms = c.comm / 1000;
  const auto plan = tpipe::simulate(schedule, c);
  const double measured = last > first ? 1.0 - busy / ((last - first) * static_cast<double>(t.ranks.size())) : 0.0;
  return {measured, plan.bubble};
}

}  // namespace

nlohmann::json run_single(const Workload& w) {
  torch::manual_seed(0);
  std::vector<tpipe::LayerPtr> layers;
  std::vector<at::Tensor> params;
  for (auto& s : model(w)) {
    layers.push_back(s.factory());
    for (auto& [n, p] : layers.back()->named_parameters()) params.push_back(p);
  }
  auto opt = sgd(params);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  const double step = time_steps(w, [&] {
    opt->zero_grad();
    tpipe::Payload p{x};
    for (auto& l : layers) p = l->forward(p);
    loss_fn(p[0], y).backward();
    opt->step();
  });
  return {{"step_s", step}};
}

nlohmann::json run_serial(const Workload& w) {
  torch::manual_seed(0);
  std::vector<std::vector<tpipe::LayerPtr>> halves(2);
  std::vector<at::Tensor> params;
  const auto specs = model(w);
  for (int i = 0; i < w.layers; ++i) {
    auto& half = halves[i < w.layers / 2 ? 0 : 1];
    half.push_back(specs[i].factory());
    for (auto& [n, p] : half.back()->named_parameters()) params.push_back(p);
  }
  auto opt = sgd(params);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  const auto xs = x.chunk(w.microbatches), ys = y.chunk(w.microbatches);
  auto run = [](std::vector<tpipe::LayerPtr>& half, at::Tensor t) {
    tpipe::Payload p{std::move(t)};
    for (auto& l : half) p = l->forward(p);
    return p[0];
  };
  std::map<std::string, std::vector<double>> per_op;
  int calls = 0;
  const double step = time_steps(w, [&] {
    const bool timed = calls++ >= w.warmup;
    auto note = [&](const char* key, Clock::time_point t0) {
      if (timed) per_op[key].push_back(ms_since(t0));
    };
    opt->zero_grad();
    for (int k = 0; k < w.microbatches; ++k) {
      auto t0 = Clock::now();
      const at::Tensor h = run(halves[0], xs[k]);
      note("0F", t0);
      t0 = Clock::now();
      const at::Tensor hin = h.detach().requires_grad_(true);
      const at::Tensor loss = loss_fn(run(halves[1], hin), ys[k]) / w.microbatches;
      loss.item<double>();  // as the last stage does, to report the loss
      note("1F", t0);
      t0 = Clock::now();
      loss.backward();
      note("1B", t0);
      t0 = Clock::now();
      h.backward(hin.grad());
      note("0B", t0);
    }
    opt->step();
  });
  nlohmann::json ops;
  for (auto& [k, v] : per_op) ops[k] = median(v);
  const char* process = std::getenv("RANK");  // which of the pair, when run by `tpipe run`
  return {{"step_s", step}, {"compute_ms", ops}, {"process", process ? std::atoi(process) : 0}};
}

nlohmann::json run_pipe(const Workload& w, const std::string& schedule, int dp, const std::string& timeline) {
  auto comm = tpipe::Communicator::from_env();
  tpipe::EngineOptions o;
  o.schedule = schedule;
  o.microbatches = w.microbatches;
  o.dp = dp;
  o.layer_seed = 0;
  tpipe::PipelineEngine engine(
      model(w), [](const tpipe::Payload& out, const tpipe::Payload& t) { return loss_fn(out[0], t[0]); }, sgd, *comm, o);
  torch::manual_seed(1);
  const auto x = torch::randn({w.batch, w.width}), y = torch::randn({w.batch, w.width});
  std::int64_t peak = 0;
  double reduce = 0;
  int calls = 0;
  const double step = time_steps(w, [&] {
    const auto r = engine.train_batch({x}, {y});
    peak = r.held_peak_bytes;
    if (calls++ >= w.warmup) reduce += r.reduce_seconds / w.steps;
  });
  int messages = 0;  // point-to-point messages of one step, all ranks of a replica
  for (const auto& list : engine.schedule().ranks)
    for (const auto& a : list) messages += a.op == tpipe::Op::SendAct || a.op == tpipe::Op::SendGrad;
  bool shm = false;
  for (int q = 0; q < comm->world_size(); ++q) shm = shm || (q != comm->rank() && comm->shares_memory_with(q));
  nlohmann::json out{{"step_s", step},         {"peak_bytes", peak}, {"reduce_s", reduce}, {"rank", comm->rank()},
                     {"messages", messages}, {"transport", shm ? "shared memory" : "Gloo's sockets"}};
  // Recorded steps, analysed on rank 0 (recording is off in the timed steps above).
  engine.set_recording(true);
  std::vector<double> measured, predicted, comm_ms, cost, traced, stepped;
  std::map<std::string, std::vector<double>> ops;
  const double event_s = comm->rank() == 0 ? per_event_cost() : 0.0;
  for (int i = 0; i < 3; ++i) {
    const auto r = engine.train_batch({x}, {y});
    if (comm->rank() != 0) continue;
    const auto& t = engine.last_trace();
    double c = 0;
    const auto [m, p] = bubbles(t, engine.schedule(), &c);
    measured.push_back(m);
    predicted.push_back(p);
    comm_ms.push_back(c);
    cost.push_back((r.gather_seconds + static_cast<double>(t.events.size()) * event_s) / step);
    traced.push_back((t.end_us() - t.start_us()) / 1000);
    stepped.push_back((r.step_seconds - r.gather_seconds) * 1000);
    for (const auto& [k, v] : compute_ms(t)) ops[k].push_back(v);
  }
  if (comm->rank() == 0) {
    out["bubble_measured"] = median(measured);
    out["bubble_predicted"] = median(predicted);
    out["comm_ms"] = median(comm_ms);
    out["record_cost"] = median(cost);
    out["traced_ms"] = median(traced);   // first action's start to last action's end, any rank
    out["step_ms"] = median(stepped);    // rank 0's train_batch, without the trace gather
    nlohmann::json j;
    for (auto& [k, v] : ops) j[k] = median(v);
    out["compute_ms"] = j;
    if (!timeline.empty()) {
      tpipe::write_file_atomic(timeline, tpipe::trace::render_timeline_svg(
                                             engine.last_trace(), {"W1 · tpipe " + schedule + " · measured"}));
      tpipe::trace::write_chrome_trace(timeline + ".trace.json", {engine.last_trace()});
    }
  }
  return out;
}

nlohmann::json run_doctor() {
  const tpipe::DoctorReport r = tpipe::examine_machine();
  return {{"line", tpipe::summary_line(r)}, {"gemm_gflops", r.gemm_gflops}, {"kernel", r.facts.blas_corename}};
}

}  // namespace bench
