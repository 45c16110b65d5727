// The engine's own cost at depth: p stages of a trivial layer (an 8 x 8 linear map on one row per
// micro-batch, microseconds of math) as p processes of `tpipe run`, p = 2, 4, 8, 16, so that what
// a step takes is the engine's per-action work and its messages. Under GPipe the critical path of
// a step is 2(m + p - 1) actions, each followed by a message to the next stage except at the turn,
// so step / (2(m + p - 1)) is the cost of one action on that path (its scheduling, autograd call,
// message); a ping-pong between two ranks gives the one-way latency of a message by itself. On this
// machine 16 ranks share 2 cores, so deep pipelines also measure the ranks' contention.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "children.h"
#include "tpipe/engine.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

nlohmann::json run_pipe(int microbatches, int steps) {
  auto comm = tpipe::Communicator::from_env();
  const int p = comm->world_size();
  std::vector<tpipe::LayerSpec> layers;
  for (int i = 0; i < p; ++i) layers.push_back(tpipe::layer("map" + std::to_string(i), [] { return torch::nn::Linear(8, 8); }));
  tpipe::EngineOptions o;
  o.schedule = "gpipe";
  o.microbatches = microbatches;
  o.layer_seed = 0;
  tpipe::PipelineEngine engine(
      layers, [](const tpipe::Payload& out, const tpipe::Payload& t) { return torch::mse_loss(out[0], t[0]); },
      [](tpipe::NamedParameters params) {
        std::vector<at::Tensor> ps;
        for (auto& [n, t] : params) ps.push_back(t);
        return std::make_unique<torch::optim::SGD>(ps, torch::optim::SGDOptions(0.01));
      },
      *comm, o);
  const auto x = torch::randn({microbatches, 8}), y = torch::randn({microbatches, 8});
  std::vector<double> times;
  for (int s = 0; s < steps + 3; ++s) {
    const auto r = engine.train_batch({x}, {y});
    if (s >= 3) times.push_back(r.step_seconds);  // three steps to warm up
  }
  return {{"rank", comm->rank()}, {"step_s", median(times)}};
}

// One way of a message, from a ping-pong of `rounds` round trips. Each round uses micro-batch
// `mb(i)`: a new one each time (every message's shapes unknown to the receiver until its header
// arrives), or the same one (as in training, where step k's micro-batch j has the shapes of step
// k-1's, so the data receive is posted with the header's).
double pingpong(tpipe::Communicator& comm, int rounds, const std::function<int(int)>& mb) {
  const int me = comm.rank(), peer = 1 - me;
  const tpipe::Where where{me};
  const tpipe::Payload one{torch::ones({1})};
  comm.world().all_gather(std::int64_t{me}, "ping-pong start");  // both ranks ready
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    if (me == 0) {
      auto back = comm.post_recv(peer, tpipe::wire::Kind::Gradient, mb(i));
      comm.send(one, peer, tpipe::wire::Kind::Activation, mb(i), 0, 0, where);
      comm.wait_recv(*back, where);
    } else {
      auto in = comm.post_recv(peer, tpipe::wire::Kind::Activation, mb(i));
      comm.wait_recv(*in, where);
      comm.send(one, peer, tpipe::wire::Kind::Gradient, mb(i), 0, 1, where);
    }
  }
  comm.wait_sends();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (2.0 * rounds) * 1e6;
}

nlohmann::json run_pingpong(int rounds) {
  auto comm = tpipe::Communicator::from_env();
  const double fresh = pingpong(*comm, rounds, [](int i) { return 1000 + i; });
  const double repeated = pingpong(*comm, rounds, [](int) { return 0; });
  return {{"rank", comm->rank()}, {"fresh_us", fresh}, {"repeated_us", repeated}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The engine's overhead at depth: many stages of a trivial layer, as processes"};
  std::string mode, tpipe_bin = "tpipe";
  int microbatches = 16, steps = 20, rounds = 2000;
  app.add_option("--mode", mode, "worker mode: pipe | pingpong (empty: everything, as a table)");
  app.add_option("--tpipe", tpipe_bin, "the tpipe command, to start the ranks");
  app.add_option("--microbatches", microbatches)->capture_default_str();
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--rounds", rounds)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (mode == "pipe") return bench::report_child([&] { return run_pipe(microbatches, steps); });
  if (mode == "pingpong") return bench::report_child([&] { return run_pingpong(rounds); });

  std::printf("engine overhead at depth (%s)\n", bench::tune_children().c_str());
  const std::string self = bench::self_path(argv[0]);
  const auto latency = bench::run_child(tpipe_bin + " run -n 2 -- " + self + " --mode pingpong --rounds " +
                                        std::to_string(rounds));
  std::printf("message one way, 2 ranks (ping-pong of a 1-float payload): %.0f us with the shapes known "
              "(as from the second step on), %.0f us without\n",
              latency->front()["repeated_us"].get<double>(), latency->front()["fresh_us"].get<double>());
  std::printf("%6s %6s %10s %12s %16s %14s\n", "ranks", "m", "step ms", "messages", "critical actions",
              "us per action");
  for (int p : {2, 4, 8, 16}) {
    const auto r = bench::run_child(tpipe_bin + " run -n " + std::to_string(p) + " -- " + self + " --mode pipe " +
                                    "--microbatches " + std::to_string(microbatches) + " --steps " +
                                    std::to_string(steps));
    const double step = r->front()["step_s"].get<double>();
    const int critical = 2 * (microbatches + p - 1);
    std::printf("%6d %6d %10.2f %12d %16d %14.0f\n", p, microbatches, step * 1e3, 2 * (p - 1) * microbatches,
                critical, step / critical * 1e6);
  }
  return 0;
}
