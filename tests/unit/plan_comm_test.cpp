// What the planner measures beyond each layer's forward and backward: communication (lines
// fitted through two timings; the step's end charged with them), the sender's cost, computing
// beside other ranks, and the backward split into B and W.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/plan.h"
#include "tpipe/plan_comm.h"

#include "plan_fixtures.h"

namespace tpipe {
namespace {

using namespace plan_fixtures;

TEST(PlanComm, ALineThroughTwoTimings) {
  // 0.1 ms + bytes at 1 GB/s, timed at 4 KiB and 4 MiB.
  const LinearCost c = fit_linear_cost(4096, 1e-4 + 4096 / 1e9, 4 << 20, 1e-4 + (4 << 20) / 1e9);
  EXPECT_NEAR(c.latency_s, 1e-4, 1e-15);
  EXPECT_NEAR(c.bytes_per_s, 1e9, 1e-3);
  EXPECT_NEAR(c.seconds(1e6), 1e-4 + 1e-3, 1e-15);
  // The large one no slower than the small one (noise): its mean rate, no latency.
  const LinearCost flat = fit_linear_cost(4096, 2e-3, 1 << 20, 1e-3);
  EXPECT_EQ(flat.latency_s, 0.0);
  EXPECT_DOUBLE_EQ(flat.bytes_per_s, (1 << 20) / 1e-3);
  // A line that would start below zero starts at zero, its slope kept.
  const LinearCost steep = fit_linear_cost(1000, 1e-6, 2000, 1e-3);
  EXPECT_EQ(steep.latency_s, 0.0);
  EXPECT_NEAR(steep.bytes_per_s, 1000 / (1e-3 - 1e-6), 1e-6);
}

TEST(PlanComm, MeasuredLinesOrTheFixedRing) {
  CommCosts c;
  EXPECT_DOUBLE_EQ(message_seconds(c, 1000, 5e-5, 2e9), 5e-5 + 1000 / 2e9);
  EXPECT_DOUBLE_EQ(all_reduce_seconds(c, 4, 1000, 5e-5, 2e9), 6 * 5e-5 + 1.5 * 1000 / 2e9);  // 2(g-1), 2(g-1)/g
  EXPECT_EQ(all_reduce_seconds(c, 1, 1000, 5e-5, 2e9), 0.0);
  c.point_to_point = {2e-4, 1e8};
  c.all_reduce[4] = {5e-3, 1e6};
  EXPECT_DOUBLE_EQ(message_seconds(c, 1000, 5e-5, 2e9), 2e-4 + 1e-5);
  EXPECT_DOUBLE_EQ(all_reduce_seconds(c, 4, 1000, 5e-5, 2e9), 5e-3 + 1e-3);
  EXPECT_DOUBLE_EQ(all_reduce_seconds(c, 2, 1000, 5e-5, 2e9), 2 * 5e-5 + 1000 / 2e9) << "groups of 2: not measured";
}

// pp = 2 x dp = 2, GPipe, m = 8 of 4 rows: each stage F 1 ms, B 2 ms, 2000 weight bytes, 40-byte
// outputs. With the measured lines: all-reduce in pairs 1 ms + 1 MB/s, in fours 5 ms + 1 MB/s;
// a message 0.2 ms + 100 MB/s.
TEST(PlanComm, TheStepEndIsChargedWithTheMeasuredCollectives) {
  PlanRequest r = two_ranks();
  r.ranks = 4;
  r.comm.point_to_point = {2e-4, 1e8};
  r.comm.all_reduce[2] = {1e-3, 1e6};
  r.comm.all_reduce[4] = {5e-3, 1e6};
  r.tied_bytes = 500;
  r.record_every_step = true;
  const Layout g = predict_layout(r, choice(2, 2, 8, "gpipe"));
  const double message = 2e-4 + 40 / 1e8;
  EXPECT_NEAR(g.pipeline_s, 9 * 3e-3 + 2 * message, 1e-12);
  EXPECT_NEAR(g.allreduce_s, 1e-3 + 2000 / 1e6, 1e-15);
  const double tied = 5e-3 + 500 / 1e6, norm = 1e-3 + 8 / 1e6, gather = 5e-3 + 4096 / 1e6;
  EXPECT_NEAR(g.step_end_s, tied + norm + gather, 1e-15);
  EXPECT_DOUBLE_EQ(g.step_s, g.pipeline_s + g.allreduce_s + g.step_end_s + g.optimizer_s);

  // ZB-V puts the first and the last stage on rank 0: the tied copies are one module there.
  const Layout v = predict_layout(r, choice(2, 2, 8, "zb-v"));
  EXPECT_NEAR(v.step_end_s, norm + gather, 1e-15);
  // Not recording, one stage: nothing but the data-parallel all-reduce is left.
  r.record_every_step = false;
  EXPECT_EQ(predict_layout(r, choice(1, 4, 2, "1f1b")).step_end_s, 0.0);
}

// Ranks computing beside each other slower than alone: every action and the optimizer's step by
// the measured factor, with more than one rank only.
TEST(PlanComm, ComputeSlowdownScalesEveryActionAndTheOptimizer) {
  PlanRequest r = two_ranks();
  r.optimizer_s_per_weight_byte = 1e-6;
  r.compute_slowdown = 1.5;
  const Layout g = predict_layout(r, choice(2, 1, 16, "gpipe"));
  const double c = 50e-6 + 40 / 2e9;
  EXPECT_NEAR(g.pipeline_s, 17 * 1.5 * 3e-3 + 2 * c, 1e-12);
  EXPECT_NEAR(g.optimizer_s, 1.5 * 2000 * 1e-6, 1e-15);
  r.ranks = 1;
  const Layout one = predict_layout(r, choice(1, 1, 16, "1f1b"));
  EXPECT_NEAR(one.pipeline_s, 16 * 4 * (0.5e-3 + 1e-3), 1e-12) << "one rank computes alone: no slowdown";
  EXPECT_NEAR(one.optimizer_s, 4000 * 1e-6, 1e-15);
}

// Starting a send costs the sender: GPipe's F of stage 0 and B of stage 1 each send 40 bytes.
TEST(PlanComm, TheActionThatSendsPaysForStartingTheSend) {
  PlanRequest r = two_ranks();
  r.comm.sending = {1e-4, 4e5};  // 0.1 ms + 40 bytes at 400 kB/s = 0.2 ms
  const Layout g = predict_layout(r, choice(2, 1, 16, "gpipe"));
  const double c = 50e-6 + 40 / 2e9, send = 1e-4 + 40 / 4e5;
  // Rank 0's 16 F of 1 ms + send set the pace (rank 1's F take 1 ms), rank 1's last F, its 16 B
  // of 2 ms + send, then rank 0's last B (2 ms, keeping up with rank 1's), and two messages.
  EXPECT_NEAR(g.pipeline_s, 16 * (1e-3 + send) + 1e-3 + 16 * (2e-3 + send) + 2e-3 + 2 * c, 1e-12);
  PlanRequest one = two_ranks();
  one.ranks = 1;
  one.comm.sending = r.comm.sending;
  EXPECT_EQ(predict_layout(one, choice(1, 1, 16, "1f1b")).pipeline_s,
            predict_layout(two_ranks_as_one(), choice(1, 1, 16, "1f1b")).pipeline_s) << "one rank sends nothing";
}

// A profile that measured the split backward gives B and W their own costs; without one the
// whole backward is shared by weight_share. Measured B 1.4 ms + W 0.6 ms a layer (on 8 rows) is
// the same as a 2 ms backward with weight_share 0.3; a split that costs more than the whole
// backward (as it does: B keeps the graph, W walks it again) makes the step longer.
TEST(PlanComm, AMeasuredSplitBackwardGivesBAndWTheirOwnCosts) {
  PlanRequest shared = two_ranks();
  shared.weight_share = 0.3;
  PlanRequest split = two_ranks();
  for (auto& l : split.layers) l.input_grad_s = 1.4e-3, l.weight_grad_s = 0.6e-3;
  for (const char* schedule : {"zb-h1", "zb-v"})
    EXPECT_DOUBLE_EQ(predict_layout(split, choice(2, 1, 8, schedule)).step_s,
                     predict_layout(shared, choice(2, 1, 8, schedule)).step_s)
        << schedule;
  for (auto& l : split.layers) l.input_grad_s = 1.6e-3, l.weight_grad_s = 0.8e-3;
  EXPECT_GT(predict_layout(split, choice(2, 1, 8, "zb-h1")).step_s,
            predict_layout(shared, choice(2, 1, 8, "zb-h1")).step_s);
  // Schedules that do not split keep the whole backward.
  EXPECT_EQ(predict_layout(split, choice(2, 1, 8, "1f1b")).step_s,
            predict_layout(two_ranks(), choice(2, 1, 8, "1f1b")).step_s);
}

TEST(PlanComm, MeasurementsMustBeNumbers) {
  PlanRequest r = two_ranks();
  r.comm.all_reduce[1] = {1e-3, 1e6};
  EXPECT_THROW(plan_layouts(r), ConfigError);
  r.comm.all_reduce.clear();
  r.comm.point_to_point = {-1e-3, 1e6};
  EXPECT_THROW(plan_layouts(r), ConfigError);
  r.comm.point_to_point = {};
  r.tied_bytes = -1;
  EXPECT_THROW(plan_layouts(r), ConfigError);
  r.tied_bytes = 0;
  r.compute_slowdown = 0.5;  // a speed-up from company is not a slowdown
  EXPECT_THROW(plan_layouts(r), ConfigError);
}

}  // namespace
}  // namespace tpipe
