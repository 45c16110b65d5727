// `make bench`, after tpipe_bench: what the "profile" partition buys on a model whose layers are
// not alike. Eight residual MLP blocks of width 512, x <- x + tanh(x Up) Down, float32, 8
// micro-batches of 64 rows on 2 stages; block 1 is `--heavy` (6) times wider inside. Measured in
// the pipeline, a plain block costs 1 unit and block 1 about 6 (5-6; at 5x wider, only about 4),
// 13 in all: the uniform 4+4 cut gives stage 0 about 9 units and stage 1 4, so stage 1 idles
// half the step; the profiled cut 2+6 gives 7 and 6. The slowest
// stage, which paces a pipeline, shrinks ~1.3x; the step less, because the balanced pipeline now
// pays its fill and drain, (p-1)/m of a step. 6 gives the most: from 7 on, block 1 with block 0
// outweighs the other six, the profiled cut's stage 0 is the slowest, and the gain shrinks.
//
// As tpipe_bench, the orchestrator (no --mode) runs every configuration once per round, in the
// same order, for several rounds, and reports medians over rounds: the 2-core VM drifts too much
// from minute to minute for configurations measured in different minutes to compare.
#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "tpipe/engine.h"
#include "tpipe/machine/facts.h"
#include "tpipe/schedule/action.h"
#include "children.h"
#include "workers.h"

namespace bench {
namespace {

constexpr int kLayers = 8, kWidth = 512, kHeavy = 1, kRows = 64, kMicro = 8;

// Each block draws its weights from a generator of its own, seeded by its index: every rank and
// every cut build the same weights whatever else used torch's global generator before.
struct BlockImpl : torch::nn::Module {
  BlockImpl(int hidden, int seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    up = register_parameter("up", torch::randn({kWidth, hidden}, gen) / std::sqrt(kWidth));
    down = register_parameter("down", torch::randn({hidden, kWidth}, gen) / std::sqrt(hidden));
  }
  at::Tensor up, down;
};

std::vector<tpipe::LayerSpec> unbalanced_model(int factor) {
  std::vector<tpipe::LayerSpec> specs;
  for (int i = 0; i < kLayers; ++i) {
    const int hidden = i == kHeavy ? factor * kWidth : kWidth;
    specs.push_back({"block" + std::to_string(i), [hidden, i] {
                       auto m = std::make_shared<BlockImpl>(hidden, i);
                       return tpipe::tensor_layer(
                           m, [m](const at::Tensor& x) { return x + torch::tanh(x.mm(m->up)).mm(m->down); },
                           std::vector<at::Generator>{});
                     }});
  }
  return specs;
}

// One configuration over the ranks of `tpipe run`: rank 0 reports the median step, the cut, and
// each stage's compute in a step as the pipeline ran it ("busy_ms").
nlohmann::json run_worker(const std::string& partition, const std::string& schedule, int factor, int steps) {
  auto comm = tpipe::Communicator::from_env();
  const auto x = torch::randn({kMicro * kRows, kWidth}, at::detail::createCPUGenerator(99));
  const auto y = torch::randn({kMicro * kRows, kWidth}, at::detail::createCPUGenerator(98));
  tpipe::EngineOptions o;
  o.schedule = schedule;
  o.microbatches = kMicro;
  o.partition = partition;
  if (comm->rank() == 0) o.profile_sample = {x.narrow(0, 0, kRows)};
  tpipe::PipelineEngine engine(
      unbalanced_model(factor), [](const tpipe::Payload& out, const tpipe::Payload& t) { return loss_fn(out[0], t[0]); },
      sgd, *comm, o);
  Workload w;  // only its warm-up and step counts
  w.steps = steps;
  const double step = time_steps(w, [&] { engine.train_batch({x}, {y}); });
  nlohmann::json out{{"rank", comm->rank()}, {"step_s", step}, {"cut", tpipe::to_string(engine.partition())}};
  // Then a few recorded steps (recording is off in the timed ones): each stage's compute in the
  // pipeline itself, which is what the cut balances. Not the profile's own numbers: a layer timed
  // alone in a fresh process measured up to 2x its time in the pipeline, and varied as much.
  engine.set_recording(true);
  std::vector<std::vector<double>> busy(engine.num_stages());
  for (int i = 0; i < 3; ++i) {
    engine.train_batch({x}, {y});
    if (comm->rank() != 0) continue;
    std::vector<double> ms(busy.size());
    for (const auto& e : engine.last_trace().events)
      if (tpipe::is_compute(e.action.op)) ms[e.action.stage] += (e.end_us - e.start_us) / 1000;
    for (std::size_t s = 0; s < busy.size(); ++s) busy[s].push_back(ms[s]);
  }
  if (comm->rank() == 0) {
    std::vector<double> ms;
    for (const auto& b : busy) ms.push_back(median(b));
    out["busy_ms"] = ms;
  }
  return out;
}

struct Config {
  std::string schedule, partition, cmd;
  std::vector<double> step_s, busy0_ms, busy1_ms;  // one per round
  std::vector<std::string> cuts;  // one per round (the profile, and so its cut, may differ)
  double slowest() const { return std::max(median(busy0_ms), median(busy1_ms)); }
};

int orchestrate(const std::string& self, const std::string& tpipe_cmd, int factor, int rounds, int steps) {
  const std::string choice = tune_children();
  const auto doctor = run_child(self + " --mode doctor")->front();
  std::vector<Config> cs;
  for (const std::string schedule : {"1f1b", "zb-h1"})
    for (const std::string partition : {"uniform", "profile"})
      cs.push_back({schedule, partition,
                    tpipe_cmd + " run -n 2 -- " + self + " --mode worker --schedule " + schedule + " --partition " +
                        partition + " --heavy " + std::to_string(factor) + " --steps " + std::to_string(steps)});
  std::printf("unbalanced: %d x [x + tanh(x Up) Down], width %d, block %d %dx wider inside; %d micro-batches of %d "
              "rows, p = 2, float32; median of %d rounds, each the median of %d steps\n",
              kLayers, kWidth, kHeavy, factor, kMicro, kRows, rounds, steps);
  std::printf("ranks: %s\nmachine (one rank): %s\nBLAS kernel: %s\n", choice.c_str(),
              doctor["line"].get<std::string>().c_str(), doctor["kernel"].get<std::string>().c_str());
  std::fflush(stdout);
  for (int r = 0; r < rounds; ++r) {
    std::fprintf(stderr, "round %d/%d\n", r + 1, rounds);
    for (auto& c : cs) {
      const auto got = run_child(c.cmd)->front();
      c.step_s.push_back(got["step_s"].get<double>());
      c.busy0_ms.push_back(got["busy_ms"][0].get<double>());
      c.busy1_ms.push_back(got["busy_ms"][1].get<double>());
      c.cuts.push_back(got["cut"].get<std::string>());
    }
  }
  std::printf("\n%-9s %-10s %-6s %19s %10s %7s %16s\n", "schedule", "partition", "cut", "compute per step",
              "step", "spread", "uniform/profile");
  std::printf("%-9s %-10s %-6s %19s %10s %7s %9s %6s\n", "", "", "", "stage 0   stage 1", "", "", "step", "slowest");
  for (std::size_t i = 0; i < cs.size(); ++i) {
    const Config& c = cs[i];
    const double t = median(c.step_s);
    double lo = c.step_s.front(), hi = lo;
    for (double v : c.step_s) lo = std::min(lo, v), hi = std::max(hi, v);
    std::string cut = c.cuts.front();
    for (const auto& k : c.cuts)
      if (k != cut) cut += "/" + k;  // the rounds disagreed: show every cut seen, first first
    std::printf("%-9s %-10s %-6s %6.0f ms %6.0f ms %8.3f s %6.0f%%", c.schedule.c_str(), c.partition.c_str(),
                cut.c_str(), median(c.busy0_ms), median(c.busy1_ms), t, 100 * (hi - lo) / t);
    if (c.partition == "profile") {
      const Config& u = cs[i - 1];  // the uniform row of the same schedule
      std::printf(" %9.2f %7.2f", median(u.step_s) / t, u.slowest() / c.slowest());
    }
    std::printf("\n");
  }
  std::printf("(compute per step: a stage's forwards and backwards of one step, summed, in recorded steps; "
              "uniform/profile slowest: the ratio of the slowest stage's compute, the speed-up of a pipeline paced by "
              "its slowest stage and without a bubble; spread: (max-min)/median of the step over rounds)\n");
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  CLI::App app{"tpipe benchmark: the uniform and the profiled partition on an unbalanced model"};
  std::string mode, schedule = "1f1b", partition = "uniform", tpipe_cmd = "tpipe";
  int rounds = 5, steps = 5, factor = 6;
  app.add_option("--mode", mode, "worker mode: worker | doctor (empty: everything, as a table)");
  app.add_option("--schedule", schedule, "worker mode: any schedule tpipe knows")->capture_default_str();
  app.add_option("--partition", partition, "worker mode: uniform | profile | ...")->capture_default_str();
  app.add_option("--heavy", factor, "how many times wider inside block 1 is than the others")->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--tpipe", tpipe_cmd, "path of the tpipe command (for `tpipe run`)")->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of all configurations (medians are reported)")->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--steps", steps, "timed steps per configuration and round (after 2 warm-up ones)")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  if (mode.empty()) {
    try {
      return bench::orchestrate(bench::self_path(argv[0]), tpipe_cmd, factor, rounds, steps);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  return bench::report_child([&] {
    if (mode == "worker") return bench::run_worker(partition, schedule, factor, steps);
    if (mode == "doctor") return bench::run_doctor();
    throw std::runtime_error("unknown --mode " + mode);
  });
}
