// The simulator's makespan, bubble and in-flight counts against closed forms.
#include <gtest/gtest.h>

#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {
namespace {

TEST(Simulator, BubbleIsExactlyTheClosedFormForGPipeAnd1F1B) {
  for (const char* name : {"gpipe", "1f1b"})
    for (int p : {1, 2, 3, 4, 8})
      for (int m : {1, 2, 3, 4, 8, 16}) {
        const SimResult r = simulate(make_schedule(name, p, m));
        EXPECT_EQ(r.makespan, 3.0 * (m + p - 1)) << name << " p=" << p << " m=" << m;
        EXPECT_EQ(r.bubble, static_cast<double>(p - 1) / (m + p - 1)) << name << " p=" << p << " m=" << m;
      }
}

// Qi et al., "Zero Bubble Pipeline Parallelism" (ICLR 2024), section 3.1: with T_F = T_B = T_W,
// ZB-H1 idles p-1 units per stage against 1F1B's 3(p-1), so for m >= p the step takes 3m + p - 1
// units and the bubble is (p-1)/(3m+p-1); F and B keep 1F1B's in-flight limit.
TEST(Simulator, ZbH1BubbleIsTheClosedFormAndItsInFlightIs1F1Bs) {
  Costs unit;
  unit.forward = unit.backward = unit.weight = 1;
  for (int p : {1, 2, 3, 4, 5, 8})
    for (int m = p; m <= 3 * p + 1; ++m) {
      const SimResult r = simulate(make_schedule("zb-h1", p, m), unit);
      EXPECT_EQ(r.makespan, 3.0 * m + p - 1) << "p=" << p << " m=" << m;
      EXPECT_EQ(r.bubble, static_cast<double>(p - 1) / (3 * m + p - 1)) << "p=" << p << " m=" << m;
      EXPECT_EQ(r.peak_inflight_per_rank, simulate(make_schedule("1f1b", p, m)).peak_inflight_per_rank)
          << "p=" << p << " m=" << m;
    }
  // Against 1F1B at the same total backward cost (B + W = 2): a third of its idle time.
  const SimResult f = simulate(make_schedule("1f1b", 4, 8));
  const SimResult z = simulate(make_schedule("zb-h1", 4, 8), unit);
  EXPECT_EQ(f.makespan - 3 * 8, 3.0 * (4 - 1));
  EXPECT_EQ(z.makespan - 3 * 8, 1.0 * (4 - 1));
}

TEST(Simulator, PeakInFlight) {
  const int p = 4, m = 8;
  const SimResult g = simulate(make_schedule("gpipe", p, m));
  const SimResult f = simulate(make_schedule("1f1b", p, m));
  EXPECT_EQ(g.peak_inflight_per_rank, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(f.peak_inflight_per_rank, (std::vector<int>{4, 3, 2, 1}));
  EXPECT_EQ(simulate(make_schedule("1f1b", 4, 2)).peak_inflight_per_rank, (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(simulate(make_schedule("naive", 4, 8)).peak_inflight_per_rank, (std::vector<int>{1, 1, 1, 1}));
}

TEST(Simulator, NaiveHasNoOverlap) {
  const SimResult r = simulate(make_schedule("naive", 4, 2));
  EXPECT_EQ(r.makespan, 2 * 4 * 3.0);
  EXPECT_EQ(r.bubble, 0.75);
  EXPECT_EQ(r.bubble_per_rank, (std::vector<double>{0.75, 0.75, 0.75, 0.75}));
}

TEST(Simulator, PerRankBubbleOfGPipe) {
  // p=2, m=2, F=1, B=2: makespan 9, each rank busy 6.
  const SimResult r = simulate(make_schedule("gpipe", 2, 2));
  EXPECT_EQ(r.busy_per_rank, (std::vector<double>{6, 6}));
  EXPECT_EQ(r.bubble_per_rank, (std::vector<double>{3.0 / 9, 3.0 / 9}));
}

TEST(Simulator, CommLatencyDelaysConsumers) {
  Costs c;
  c.comm = 0.5;
  // p=2, m=1: F0 | comm | F0 B0 | comm | B0 -> 1 + .5 + 1 + 2 + .5 + 2
  EXPECT_EQ(simulate(make_schedule("gpipe", 2, 1), c).makespan, 7.0);
}

// A slow last stage sets the pace: p=2, m=2, stage 1 takes F=2, B=4, stage 0 F=1, B=2.
TEST(Simulator, PerStageCosts) {
  Costs c;
  c.forward_by_stage = {1, 2};
  c.backward_by_stage = {2, 4};
  const SimResult r = simulate(make_schedule("gpipe", 2, 2), c);
  // rank 1: F0 [1,3] F1 [3,5] B0 [5,9] B1 [9,13]; rank 0: B0 [9,11] B1 [13,15].
  EXPECT_EQ(r.makespan, 15.0);
  EXPECT_EQ(r.busy_per_rank, (std::vector<double>{6, 12}));
}

TEST(Simulator, PerActionCostsOverrideTheRest) {
  Costs c;
  c.by_action = {{"1B0", 5.0}};
  // p=2, m=1: 0F0 [0,1], 1F0 [1,2], 1B0 [2,7], 0B0 [7,9].
  EXPECT_EQ(simulate(make_schedule("gpipe", 2, 1), c).makespan, 9.0);
}

TEST(Simulator, ChartDrawsBoxesWhereTheyRun) {
  Costs c;
  c.backward = 1;
  const SimResult r = simulate(make_schedule("gpipe", 2, 2), c);
  EXPECT_EQ(render_chart(r, 1.0),
            "rank 0 | 0F0 0F1  .   .  0B0 0B1\n"
            "rank 1 |  .  1F0 1F1 1B0 1B1  .\n");
}

}  // namespace
}  // namespace tpipe
