// Ranks sharing cores (compute_sim.h, shared_cores_makespan).
#include <gtest/gtest.h>

#include <numeric>

#include "tpipe/error.h"
#include "tpipe/schedule/compute_sim.h"
#include "tpipe/schedule/generators.h"

namespace tpipe {
namespace {

Costs uneven(int stages) {
  Costs c;
  for (int st = 0; st < stages; ++st) {
    c.forward_by_stage.push_back(1.0 + 0.25 * st);
    c.backward_by_stage.push_back(2.0 + 0.5 * (st % 3));
    c.weight_by_stage.push_back(0.75 + 0.125 * st);
  }
  return c;
}

double total_work(const SimResult& r) { return std::accumulate(r.busy_per_rank.begin(), r.busy_per_rank.end(), 0.0); }

// With a core for every rank nothing is shared: the compute replay's makespan, comm included.
TEST(SharedCores, ACoreForEveryRankIsTheComputeReplay) {
  for (const std::string name : {"gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"})
    for (int p : {2, 3, 4}) {
      const Schedule s = compute_schedule(name, p, 6);
      Costs c = uneven(s.num_stages());
      c.comm = 0.3;
      const double alone = simulate_compute(s, c).makespan;
      EXPECT_NEAR(shared_cores_makespan(s, c, p), alone, 1e-9 * alone) << name << " p=" << p;
      EXPECT_NEAR(shared_cores_makespan(s, c, 2 * p, 2), alone, 1e-9 * alone) << name << " p=" << p;
    }
}

// One core: without message latency some action is always ready, so the core never idles and the
// step is all the work. Two replicas on two cores are the same.
TEST(SharedCores, OneCoreDoesAllTheWorkOneAfterAnother) {
  for (const std::string name : {"gpipe", "1f1b", "zb-h1", "zb-v"}) {
    const Schedule s = compute_schedule(name, 4, 5);
    const Costs c = uneven(s.num_stages());
    const double work = total_work(simulate_compute(s, c));
    EXPECT_NEAR(shared_cores_makespan(s, c, 1), work, 1e-9 * work) << name;
    EXPECT_NEAR(shared_cores_makespan(s, c, 2, 2), work, 1e-9 * work) << name;
  }
}

// GPipe, 2 ranks, 1 micro-batch, F = 1, B = 2 on one core: F0, F1, B1, B0 one after another = 6;
// with 2 micro-batches the two ranks overlap and share: F0 (1), then F0' and F1 at half speed
// (2), ... all the work, 12.
TEST(SharedCores, HandComputed) {
  EXPECT_DOUBLE_EQ(shared_cores_makespan(compute_schedule("gpipe", 2, 1), {}, 1), 6.0);
  EXPECT_DOUBLE_EQ(shared_cores_makespan(compute_schedule("gpipe", 2, 2), {}, 1), 12.0);
  // 1.5 cores for 2 ranks: the overlap runs at 0.75 each. GPipe m = 2: F0 [0,1]; F0', F1 together
  // [1, 1 + 1/0.75]; then F1' alone (1), B1 (2) alone...: 1 + 4/3 + 1 + 2 = 16/3, then B1' and B0
  // together (2 each at 0.75: 8/3), then B0' alone (2): 16/3 + 8/3 + 2 = 10.
  EXPECT_NEAR(shared_cores_makespan(compute_schedule("gpipe", 2, 2), {}, 1.5), 10.0, 1e-12);
}

TEST(SharedCores, RefusesNoCores) {
  EXPECT_THROW(shared_cores_makespan(compute_schedule("gpipe", 2, 2), {}, 0), ScheduleError);
}

}  // namespace
}  // namespace tpipe
