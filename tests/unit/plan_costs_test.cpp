// The planner's step time beyond the simulator's makespan: actions' fixed costs, the optimizer's
// step, and ranks sharing fewer cores.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/plan.h"

#include "plan_fixtures.h"

namespace tpipe {
namespace {

using namespace plan_fixtures;

// Measured on 8 rows (F 1 ms, B 2 ms a layer) and on 1 row (F 0.3 ms, B 0.46 ms): a layer takes
// F = 0.2 + 0.1 x rows ms and B = 0.24 + 0.22 x rows ms. pp = 1, m = 16 of 4 rows: 16 x 4 layers x
// (0.6 + 1.12) ms. The optimizer's step adds the rank's 4000 weight bytes x 1 us.
TEST(Plan, FewerRowsGiveEachActionItsFixedCostAndTheOptimizerItsStep) {
  PlanRequest r = two_ranks();
  r.ranks = 1;
  r.global_batch = 64;
  for (int i = 0; i < 4; ++i) {
    LayerFacts few = layer("block" + std::to_string(i), 0.3e-3, 0.46e-3);
    few.rows = 1;
    r.layers_fewer_rows.push_back(few);
  }
  const Layout proportional = predict_layout(two_ranks_as_one(), choice(1, 1, 16, "1f1b"));
  EXPECT_NEAR(proportional.pipeline_s, 16 * 4 * (0.5e-3 + 1e-3), 1e-12);
  const Layout line = predict_layout(r, choice(1, 1, 16, "1f1b"));
  EXPECT_NEAR(line.pipeline_s, 16 * 4 * (0.6e-3 + 1.12e-3), 1e-12);
  EXPECT_EQ(line.optimizer_s, 0.0);
  r.optimizer_s_per_weight_byte = 1e-6;
  const Layout stepped = predict_layout(r, choice(1, 1, 16, "1f1b"));
  EXPECT_NEAR(stepped.optimizer_s, 4000 * 1e-6, 1e-15);
  EXPECT_NEAR(stepped.step_s, line.pipeline_s + 4000 * 1e-6, 1e-12);
  r.layers_fewer_rows.pop_back();
  EXPECT_THROW(predict_layout(r, choice(1, 1, 16, "1f1b")), ConfigError);
}

// 4 ranks on 2 cores: pure data parallelism keeps every rank busy, so the step is the work of all
// four over two cores; GPipe with m = 2 on 4 stages never has more than two ranks computing at
// once, so two cores are enough and its makespan stands.
TEST(Plan, MoreRanksThanCoresShareTheCores) {
  PlanRequest r = two_ranks();
  r.ranks = 4;
  const Layout alone = predict_layout(r, choice(1, 4, 1, "1f1b"));
  r.cores = 2;
  const Layout shared = predict_layout(r, choice(1, 4, 1, "1f1b"));
  EXPECT_DOUBLE_EQ(shared.pipeline_s, 2 * alone.pipeline_s);
  EXPECT_EQ(shared.allreduce_s, alone.allreduce_s) << "the all-reduce";
  EXPECT_EQ(shared.step_s, shared.pipeline_s + shared.allreduce_s);
  r.cores = 0;
  const Layout pipe_alone = predict_layout(r, choice(4, 1, 2, "gpipe"));
  r.cores = 2;
  EXPECT_DOUBLE_EQ(predict_layout(r, choice(4, 1, 2, "gpipe")).pipeline_s, pipe_alone.pipeline_s)
      << "m = 2 on 4 stages idles more than half the time";
}

}  // namespace
}  // namespace tpipe
