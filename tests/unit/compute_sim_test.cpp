// The simulator at scale (compute_sim.h): equal to the full simulator on every generator where
// both run, the published bubble formulas at sizes only it plans, and deadlocks still found.
#include "tpipe/schedule/compute_sim.h"
#include "tpipe/schedule/dp_cost.h"

#include <gtest/gtest.h>

#include <random>

#include "tpipe/error.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {
namespace {

void expect_same(const SimResult& full, const SimResult& fast) {
  EXPECT_EQ(fast.makespan, full.makespan);
  EXPECT_EQ(fast.bubble, full.bubble);
  EXPECT_EQ(fast.busy_per_rank, full.busy_per_rank);
  EXPECT_EQ(fast.bubble_per_rank, full.bubble_per_rank);
  EXPECT_EQ(fast.peak_inflight_per_rank, full.peak_inflight_per_rank);
  EXPECT_TRUE(fast.timeline.empty());
}

TEST(ComputeSim, EqualsTheFullSimulatorForEveryGenerator) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> cost(0.5, 3.0);
  for (const std::string name : schedule_names())
    for (int p = 1; p <= 8; ++p)
      for (int m = 1; m <= 16; ++m)
        for (int v : name == "interleaved-1f1b" ? std::vector<int>{1, 2, 3} : std::vector<int>{0}) {
          SCOPED_TRACE(name + " p=" + std::to_string(p) + " m=" + std::to_string(m) + " v=" + std::to_string(v));
          const Schedule full = make_schedule(name, p, m, v);
          const Schedule compute = compute_schedule(name, p, m, v);
          Costs unit;  // the defaults: F=1, B=2 (W=1 where split)
          if (name == "zb-h1" || name == "zb-v") unit.backward = 1;
          expect_same(simulate(full, unit), simulate_compute(compute, unit));
          Costs uneven;  // per-stage costs and a latency between ranks
          for (int st = 0; st < full.num_stages(); ++st) {
            uneven.forward_by_stage.push_back(cost(rng));
            uneven.backward_by_stage.push_back(cost(rng));
            uneven.weight_by_stage.push_back(cost(rng));
          }
          uneven.comm = 0.25;
          expect_same(simulate(full, uneven), simulate_compute(compute, uneven));
        }
}

// At sizes make_schedule refuses the closed forms hold: 1F1B at 1024 stages x 8192 micro-batches,
// the others at 256 x 2048 (the core tests stay fast).
TEST(ComputeSim, PublishedBubblesAtScale) {
  auto bubble = [](const std::string& name, int ranks, int mbs, int v, const Costs& c) {
    return simulate_compute(compute_schedule(name, ranks, mbs, v), c).bubble;
  };
  const int p = 1024, m = 8192;
  const SimResult one = simulate_compute(compute_schedule("1f1b", p, m), {});
  EXPECT_EQ(one.makespan, 3.0 * (m + p - 1));
  EXPECT_NEAR(one.bubble, (p - 1.0) / (m + p - 1), 1e-12);
  EXPECT_EQ(one.peak_inflight_per_rank.front(), p) << "1F1B holds at most p micro-batches on the first stage";
  EXPECT_EQ(one.peak_inflight_per_rank.back(), 1);
  const int q = 256, n = 2048;
  EXPECT_NEAR(bubble("gpipe", q, n, 0, {}), (q - 1.0) / (n + q - 1), 1e-12);
  Costs split;
  split.backward = 1;
  EXPECT_NEAR(bubble("zb-h1", q, n, 0, split), (q - 1.0) / (3.0 * n + q - 1), 1e-12);
  EXPECT_NEAR(bubble("interleaved-1f1b", q, n, 2, {}), (q - 1.0) / (2.0 * n + q - 1), 1e-12);  // p divides m
  EXPECT_NEAR(bubble("zb-v", q, n, 2, split), (q - 1.0) / (6.0 * n + q - 1), 1e-12);  // m >= 2p
}

TEST(ComputeSim, FindsADeadlock) {
  Schedule s;
  s.name = "backwards-first";
  s.num_microbatches = 1;
  s.stage_rank = {0, 1};
  s.ranks = {parse_actions("0B0 0F0"), parse_actions("1F0 1B0")};
  try {
    simulate_compute(s);
    FAIL() << "no deadlock found";
  } catch (const ScheduleError& e) {
    EXPECT_STREQ(e.what(),
                 "deadlock in backwards-first schedule: no rank can proceed; rank 0 waits at 0B0 for 1B0 on rank 1");
  }
}

TEST(ComputeSim, RefusesWhatItCannotPlan) {
  try {
    compute_schedule("1f1b", 4096, 8192);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "4096 ranks x 1 stage x 8192 micro-batches is more than the simulator plans (at most "
                           "16777216 stage micro-batches)");
  }
}

TEST(DpCost, RingAllReduce) {
  const Network net{1e9, 1e-5};
  EXPECT_EQ(ring_allreduce_seconds(1e9, 1, net), 0.0) << "one replica has nothing to reduce";
  EXPECT_DOUBLE_EQ(ring_allreduce_seconds(1e9, 2, net), 2 * 1e-5 + 1.0);          // 2(n-1)/n = 1
  EXPECT_DOUBLE_EQ(ring_allreduce_seconds(1e9, 1000, net), 1998 * 1e-5 + 1.998);  // bandwidth term tends to 2 B/bw
  // The step ends with the rank whose end plus all-reduce is last, not the one ending the pipeline.
  SimResult sim;
  sim.makespan = 10;
  sim.end_per_rank = {10, 9};
  const DpStep d = dp_step(sim, {1e9, 3e9}, 2, net);
  EXPECT_DOUBLE_EQ(d.step, 9 + 2e-5 + 3.0);
  EXPECT_EQ(d.slowest_rank, 1);
  EXPECT_DOUBLE_EQ(d.allreduce, 2e-5 + 3.0);
  EXPECT_DOUBLE_EQ(d.allreduce_share, (d.step - 10) / d.step);
}

}  // namespace
}  // namespace tpipe
