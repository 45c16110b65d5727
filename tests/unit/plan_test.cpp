// The layout planner: its predictions against hand-computed times and bytes, and its choices on
// models whose best layout is known.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tpipe/error.h"
#include "tpipe/plan.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"

#include "plan_fixtures.h"

namespace tpipe {
namespace {

using namespace plan_fixtures;

// pp = 2, m = 16: 4 rows a micro-batch, so a stage (2 layers) takes F = 1 ms, B = 2 ms; a message
// (40 output bytes) c = 50 us + 40 / 2e9 s. GPipe: stage 1 finishes its forwards at (m+1) F + c,
// its backwards m B later; stage 0's last backward starts c after stage 1's:
// makespan (m + p - 1)(F + B) + 2 (p - 1) c.
TEST(Plan, GPipeStepAndMemoryAreTheHandFormulas) {
  const PlanRequest r = two_ranks();
  const double c = 50e-6 + 40 / 2e9;
  const Layout g = predict_layout(r, choice(2, 1, 16, "gpipe"));
  EXPECT_EQ(g.microbatch_rows, 4);
  EXPECT_EQ(g.partition.bounds, (std::vector<int>{0, 2, 4}));
  EXPECT_NEAR(g.pipeline_s, 17 * 3e-3 + 2 * c, 1e-12);
  EXPECT_EQ(g.allreduce_s, 0.0);
  // The step's end: the gradient norm (8 bytes) all-reduced by the 2 ranks, a ring of 2 steps.
  EXPECT_NEAR(g.step_end_s, 2 * 50e-6 + 8 / 2e9, 1e-15);
  EXPECT_EQ(g.step_s, g.pipeline_s + g.step_end_s);
  // Weights, gradients and two Adam moments: 2 layers x 1000 x 4. Activations: all 16 in flight,
  // 2 x 400 bytes each, and stage 1 also keeps its 40-byte input.
  EXPECT_EQ(g.memory_bytes_per_rank, (std::vector<double>{8000 + 16 * 800, 8000 + 16 * 840}));
  EXPECT_EQ(g.peak_memory_bytes, 8000 + 16 * 840);
  EXPECT_EQ(g.fullest_rank, 1);
  EXPECT_TRUE(g.fits);

  // The search predicts the same layout the same way.
  const std::vector<Layout> all = plan_layouts(r);
  const Layout* found = find(all, 2, 16, "gpipe", "never", "uniform");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->step_s, g.step_s);
  EXPECT_EQ(found->memory_bytes_per_rank, g.memory_bytes_per_rank);
}

TEST(Plan, OneFOneBHoldsFewerMicroBatches) {
  const Layout f = predict_layout(two_ranks(), choice(2, 1, 16, "1f1b"));
  EXPECT_EQ(f.memory_bytes_per_rank, (std::vector<double>{8000 + 2 * 800, 8000 + 1 * 840}));
  EXPECT_EQ(f.fullest_rank, 0);
}

// A checkpointed micro-batch keeps its stage input and recomputes its forward in the backward.
TEST(Plan, CheckpointingTradesAForwardForMemory) {
  const PlanRequest r = two_ranks();
  const double c = 50e-6 + 40 / 2e9;
  const Layout a = predict_layout(r, choice(2, 1, 16, "gpipe", "always"));
  EXPECT_NEAR(a.pipeline_s, 17 * (1e-3 + 3e-3) + 2 * c, 1e-12);  // B = 2 ms + the 1 ms forward again
  // Rank 0 keeps nothing (its input is the batch) and recomputes 800 bytes; rank 1 keeps 16
  // inputs of 40 bytes and recomputes 800 bytes during its first backward.
  EXPECT_EQ(a.memory_bytes_per_rank, (std::vector<double>{8000 + 800, 8000 + 16 * 40 + 800}));

  // except_last: the last micro-batch keeps everything, and the first backward recomputes on top
  // of it; 15 of 16 backwards recompute (the simulator takes 15/16 of a forward on each).
  const Layout e = predict_layout(r, choice(2, 1, 16, "gpipe", "except_last"));
  EXPECT_EQ(e.memory_bytes_per_rank, (std::vector<double>{8000 + 800 + 800, 8000 + 15 * 40 + 840 + 800}));
  Costs costs;
  costs.forward_by_stage = {1e-3, 1e-3};
  costs.backward_by_stage = {2e-3 + 15.0 / 16 * 1e-3, 2e-3 + 15.0 / 16 * 1e-3};
  costs.comm = c;
  EXPECT_EQ(e.pipeline_s, simulate(make_schedule("gpipe", 2, 16), costs).makespan);
  EXPECT_LT(e.pipeline_s, a.pipeline_s);
}

// ZB-H1 splits the backward: W takes weight_share of it, except on the first stage, whose inputs
// need no gradient (its B is empty); activations are freed after W.
TEST(Plan, SplitBackwardCostsAndMemory) {
  const PlanRequest r = two_ranks();
  const Layout z = predict_layout(r, choice(2, 1, 16, "zb-h1"));
  Costs costs;
  costs.forward_by_stage = {1e-3, 1e-3};
  costs.backward_by_stage = {0, 1e-3};
  costs.weight_by_stage = {2e-3, 1e-3};
  costs.comm = 50e-6 + 40 / 2e9;
  EXPECT_EQ(z.pipeline_s, simulate(make_schedule("zb-h1", 2, 16), costs).makespan);
  // Stage 1 runs W(k) after B(k + 1): two micro-batches held, as on stage 0.
  EXPECT_EQ(z.memory_bytes_per_rank, (std::vector<double>{8000 + 2 * 800, 8000 + 2 * 840}));
}

// Data parallel: one rank per replica runs the whole model, then a ring all-reduce of its
// 4000 weight bytes: 2 (dp-1)/dp x 4000 / 2e9 s + 2 (dp-1) x 50 us.
TEST(Plan, DataParallelAddsTheAllReduce) {
  const Layout d = predict_layout(two_ranks(), choice(1, 2, 4, "1f1b"));
  EXPECT_EQ(d.microbatch_rows, 8);
  EXPECT_NEAR(d.pipeline_s, 4 * 4 * 3e-3, 1e-12);
  EXPECT_NEAR(d.allreduce_s, 4000 / 2e9 + 2 * 50e-6, 1e-15);
  EXPECT_EQ(d.step_s, d.pipeline_s + d.allreduce_s);
  EXPECT_EQ(d.memory_bytes_per_rank, (std::vector<double>{16000 + 3200}));
}

TEST(Plan, RankingPutsFittingLayoutsFirstThenTheFastest) {
  const std::vector<Layout> all = plan_layouts(two_ranks());
  ASSERT_FALSE(all.empty());
  for (std::size_t i = 1; i < all.size(); ++i) {
    EXPECT_LE(all[i - 1].step_s, all[i].step_s * (1 + 1e-11));
    if (all[i - 1].step_s == all[i].step_s) EXPECT_LE(all[i - 1].microbatches, all[i].microbatches);
  }
  // Without pipeline or all-reduce overheads in the way, splitting the batch finer changes the
  // predicted time only by rounding: the tie goes to fewer micro-batches.
  PlanRequest one = two_ranks();
  one.ranks = 1;
  const std::vector<Layout> alone = plan_layouts(one);
  EXPECT_EQ(alone.front().microbatches, 1);
  // m = 1, 2, ..., 64; three checkpoint modes, but except_last with m = 1 is never; one cut.
  EXPECT_EQ(alone.size(), 7u * 3 - 1);
  // One layout per cut: "parameters" and "profile" cut identical layers as "uniform" does.
  EXPECT_EQ(find(all, 2, 16, "gpipe", "never", "profile"), nullptr);
  EXPECT_EQ(find(all, 1, 4, "gpipe", "never", "uniform"), nullptr);  // pp = 1 runs 1f1b only
  EXPECT_NE(find(all, 1, 4, "1f1b", "never", "uniform"), nullptr);
  // Two names for the same actions are one layout: gpipe and 1f1b of one micro-batch, named by
  // the first tried.
  EXPECT_NE(find(all, 2, 1, "gpipe", "never", "uniform"), nullptr);
  EXPECT_EQ(find(all, 2, 1, "1f1b", "never", "uniform"), nullptr);
  EXPECT_NE(find(all, 2, 8, "1f1b", "never", "uniform"), nullptr);
  EXPECT_EQ(plan_layouts(two_ranks()).front().flags(), all.front().flags());  // deterministic
}

// One layer 10x slower: the time-balanced cut puts it alone on a stage. Heavy weights over a
// slow network keep data parallelism out.
TEST(Plan, UnbalancedModelIsCutByProfile) {
  PlanRequest r = two_ranks();
  r.layers[0].forward_s = 10e-3;
  r.layers[0].backward_s = 20e-3;
  for (auto& l : r.layers) l.parameter_bytes = 1e9;
  const Layout best = plan_layouts(r).front();
  EXPECT_EQ(best.pp, 2);
  EXPECT_EQ(best.partition_method, "profile");
  EXPECT_EQ(best.partition.bounds, (std::vector<int>{0, 1, 4}));
}

// Activations of 1 MB per row and layer, a batch of 8 rows: every layout that keeps all
// activations holds at least 3 MB on some rank (1F1B on 2 ranks: 2 rows in flight through 2
// layers), while checkpointing on 2 ranks needs about 2 MB (one recomputed row of 2 layers).
TEST(Plan, MemoryLimitMakesCheckpointingTheBestThatFits) {
  PlanRequest r = two_ranks();
  r.global_batch = 8;
  for (auto& l : r.layers) l.activation_bytes = 8e6;
  r.memory_per_rank = 3e6;
  const std::vector<Layout> all = plan_layouts(r);
  ASSERT_TRUE(all.front().fits);
  EXPECT_NE(all.front().checkpoint, "never");
  for (const Layout& l : all)
    if (l.checkpoint == "never") EXPECT_FALSE(l.fits) << l.flags();
  // Without the limit a faster layout that checkpoints nothing wins.
  r.memory_per_rank = std::numeric_limits<double>::infinity();
  EXPECT_EQ(plan_layouts(r).front().checkpoint, "never");
}

TEST(Plan, ALimitNothingMeetsKeepsEveryLayoutMarked) {
  PlanRequest r = two_ranks();
  const std::size_t unlimited = plan_layouts(r).size();
  r.memory_per_rank = 1;
  const std::vector<Layout> all = plan_layouts(r);
  EXPECT_EQ(all.size(), unlimited);
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_FALSE(all[i].fits);
    if (i > 0) EXPECT_LE(all[i - 1].step_s, all[i].step_s * (1 + 1e-11));
  }
}

// Two layers of heavy weights that the time-balanced cut (and the uniform one) put together; only
// the cut made under the cap separates them. flags() then names the cut's sizes.
TEST(Plan, ProfileUnderTheMemoryCap) {
  PlanRequest r = two_ranks();
  r.schedules = {"1f1b"};
  for (auto& l : r.layers) {
    l.parameters = 0;  // "parameters" cuts uniformly
    l.parameter_bytes = 0;
    l.activation_bytes = 8;
  }
  r.layers[0].parameter_bytes = r.layers[1].parameter_bytes = 1e6;  // 4 MB each on a rank
  r.layers[3].forward_s = 3e-3;
  r.layers[3].backward_s = 6e-3;
  EXPECT_EQ(partition_from_string("profile", 2, r.layers).bounds, (std::vector<int>{0, 3, 4}));
  r.memory_per_rank = 6e6;
  const Layout best = plan_layouts(r).front();
  ASSERT_TRUE(best.fits);
  EXPECT_EQ(best.partition_method, kProfileUnderCap);
  EXPECT_EQ(best.partition.bounds, (std::vector<int>{0, 1, 4}));
  EXPECT_NE(best.flags().find("--partition 1,3 "), std::string::npos) << best.flags();
}

TEST(Plan, TinyWeightsOnManyRanksArePureDataParallel) {
  PlanRequest r;
  r.layers = identical(8);
  for (auto& l : r.layers) {
    l.parameter_bytes = 8;
    l.output_bytes = 8e6;  // 1 MB per row to send between stages
  }
  r.ranks = 8;
  r.global_batch = 256;
  const Layout best = plan_layouts(r).front();
  EXPECT_EQ(best.pp, 1);
  EXPECT_EQ(best.dp, 8);
}

TEST(Plan, HugeWeightsOverASlowNetworkArePipelined) {
  PlanRequest r;
  r.layers = identical(8);
  for (auto& l : r.layers) l.parameter_bytes = 1e9;
  r.ranks = 8;
  r.global_batch = 256;
  r.bytes_per_s = 1e9;
  const Layout best = plan_layouts(r).front();
  EXPECT_EQ(best.pp, 8);
  EXPECT_EQ(best.dp, 1);
  EXPECT_EQ(best.allreduce_s, 0.0);
}

TEST(Plan, FlagsRunTheLayoutWithTpipeTrain) {
  Layout l = choice(2, 1, 8, "1f1b", "never", "profile");
  l.chunks = 1;
  l.microbatch_rows = 4;
  EXPECT_EQ(l.flags(),
            "--stages 2 --dp 1 --microbatches 8 --microbatch-size 4 --schedule 1f1b --partition profile "
            "--checkpoint never");
  l = choice(4, 2, 16, "interleaved-1f1b", "except_last", "type:block|head");
  l.chunks = 2;
  l.microbatch_rows = 2;
  EXPECT_EQ(l.flags(),
            "--stages 4 --dp 2 --microbatches 16 --microbatch-size 2 --schedule interleaved-1f1b "
            "--virtual-stages 2 --partition 'type:block|head' --checkpoint except_last");
  l = choice(2, 1, 4, "zb-h1", "always", kProfileUnderCap);
  l.chunks = 1;
  l.microbatch_rows = 1;
  l.partition = partition_explicit({1, 3}, 4);
  EXPECT_EQ(l.flags(),
            "--stages 2 --dp 1 --microbatches 4 --microbatch-size 1 --schedule zb-h1 --partition 1,3 "
            "--checkpoint always");
}

TEST(Plan, BadRequestsSayWhat) {
  auto msg = [](const PlanRequest& r) {
    try {
      plan_layouts(r);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  PlanRequest r = two_ranks();
  r.ranks = 0;
  EXPECT_NE(msg(r).find("ranks must be >= 1"), std::string::npos) << msg(r);
  r = two_ranks();
  r.layers.clear();
  EXPECT_NE(msg(r).find("no layers"), std::string::npos) << msg(r);
  r = two_ranks();
  r.layers[2].rows = 0;
  EXPECT_NE(msg(r).find("'block2' was not profiled"), std::string::npos) << msg(r);
  r = two_ranks();
  r.global_batch = 0;
  EXPECT_NE(msg(r).find("global batch"), std::string::npos) << msg(r);
  r = two_ranks();
  r.schedules = {"2f2b"};
  EXPECT_NE(msg(r).find("unknown schedule '2f2b'"), std::string::npos) << msg(r);
  r = two_ranks();
  r.checkpoints = {"sometimes"};
  EXPECT_NE(msg(r).find("'sometimes'"), std::string::npos) << msg(r);
  r = two_ranks();
  r.partitions = {"2,2"};
  EXPECT_NE(msg(r).find("got '2,2'"), std::string::npos) << msg(r);
  r = two_ranks();
  r.weight_share = 1.5;
  EXPECT_NE(msg(r).find("weight_share"), std::string::npos) << msg(r);
  r = two_ranks();
  r.layers[1].forward_s = -1;
  EXPECT_NE(msg(r).find("forward_s"), std::string::npos) << msg(r);
  // 3 ranks: pp = 3 is more stages than the 2 layers, and dp = 3 does not divide a batch of 2.
  r = two_ranks();
  r.layers.resize(2);
  r.ranks = 3;
  r.global_batch = 2;
  EXPECT_NE(msg(r).find("no layout"), std::string::npos) << msg(r);
  EXPECT_THROW(predict_layout(two_ranks(), choice(2, 2, 4, "1f1b")), ConfigError);   // 4 ranks
  EXPECT_THROW(predict_layout(two_ranks(), choice(2, 1, 3, "1f1b")), ConfigError);   // 64 / 3
}

// How long searches of the sizes tpipe plan meets take (printed; no assertion on time).
TEST(Plan, EightRanksSixteenLayersSearch) {
  for (auto [ranks, layers] : {std::pair<int, int>{8, 16}, {8, 12}, {4, 12}}) {
    PlanRequest r;
    r.layers = identical(layers);
    r.layers.back().forward_s = 4e-3;  // a heavy head, so the cuts differ
    r.layers.back().backward_s = 8e-3;
    r.ranks = ranks;
    r.global_batch = 256;
    r.memory_per_rank = 1e6;
    const auto start = std::chrono::steady_clock::now();
    const std::vector<Layout> all = plan_layouts(r);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::cout << "[ plan     ] " << ranks << " ranks, " << layers << " layers, global batch 256: " << all.size()
              << " layouts in " << ms << " ms; best: " << all.front().flags() << "\n";
    EXPECT_FALSE(all.empty());
  }
}

}  // namespace
}  // namespace tpipe
