// Golden schedules, the comm pass, and action printing/parsing.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

std::vector<std::string> rows(const Schedule& s, bool compute_only) {
  std::vector<std::string> out;
  for (int r = 0; r < s.num_ranks(); ++r)
    out.push_back(to_string(compute_only ? s.compute_actions(r) : s.ranks[r]));
  return out;
}

TEST(Action, PrintsAndParsesEveryOp) {
  for (const char* text : {"2F0", "1B3", "0W5", "1SEND_F3", "2RECV_F3", "2SEND_B3", "1RECV_B3",
                           "0REDUCE_TIED", "3REDUCE_DP", "0STEP", "12F107"})
    EXPECT_EQ(to_string(parse_action(text)), text);
  EXPECT_EQ(parse_action("1SEND_B7"), (Action{1, Op::SendGrad, 7}));
  EXPECT_EQ(parse_action("0STEP"), (Action{0, Op::OptimizerStep, -1}));
}

TEST(Action, RejectsMalformedText) {
  for (const char* bad : {"", "F0", "1X0", "1F", "1STEP2", "1SEND_F", "a1F0", "1F0x"})
    EXPECT_THROW(parse_action(bad), ScheduleError) << bad;
  try {
    parse_action("1Q2");
    FAIL();
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find("'1Q2'"), std::string::npos);
  }
}

TEST(Generators, ZbH1P3M4) {
  EXPECT_EQ(rows(zb_h1_schedule(3, 4), true), (std::vector<std::string>{
      "0F0 0F1 0F2 0B0 0W0 0F3 0B1 0W1 0B2 0W2 0B3 0W3",
      "1F0 1F1 1B0 1F2 1B1 1W0 1F3 1B2 1W1 1B3 1W2 1W3",
      "2F0 2B0 2F1 2B1 2F2 2B2 2W0 2F3 2B3 2W1 2W2 2W3"}));
  // Fewer micro-batches than stages: the warm-up is cut short, every W still follows its B.
  EXPECT_EQ(rows(zb_h1_schedule(3, 1), true),
            (std::vector<std::string>{"0F0 0B0 0W0", "1F0 1B0 1W0", "2F0 2B0 2W0"}));
}

TEST(Generators, GPipeP3M4) {
  EXPECT_EQ(rows(gpipe_schedule(3, 4), true), (std::vector<std::string>{
      "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3",
      "1F0 1F1 1F2 1F3 1B0 1B1 1B2 1B3",
      "2F0 2F1 2F2 2F3 2B0 2B1 2B2 2B3"}));
}

TEST(Generators, OneFOneBP3M4) {
  EXPECT_EQ(rows(one_f_one_b_schedule(3, 4), true), (std::vector<std::string>{
      "0F0 0F1 0F2 0B0 0F3 0B1 0B2 0B3",
      "1F0 1F1 1B0 1F2 1B1 1F3 1B2 1B3",
      "2F0 2B0 2F1 2B1 2F2 2B2 2F3 2B3"}));
}

TEST(Generators, OneFOneBP4M2HasShortWarmup) {
  EXPECT_EQ(rows(one_f_one_b_schedule(4, 2), true), (std::vector<std::string>{
      "0F0 0F1 0B0 0B1",
      "1F0 1F1 1B0 1B1",
      "2F0 2F1 2B0 2B1",
      "3F0 3B0 3F1 3B1"}));
}

TEST(Generators, NaiveRunsOneMicroBatchAtATime) {
  EXPECT_EQ(rows(naive_schedule(2, 2), true), (std::vector<std::string>{
      "0F0 0B0 0F1 0B1",
      "1F0 1B0 1F1 1B1"}));
}

TEST(Generators, OneStageIsForwardThenBackward) {
  EXPECT_EQ(rows(make_schedule("1f1b", 1, 3), false), (std::vector<std::string>{"0F0 0B0 0F1 0B1 0F2 0B2"}));
  EXPECT_EQ(rows(make_schedule("gpipe", 1, 2), false), (std::vector<std::string>{"0F0 0F1 0B0 0B1"}));
}

TEST(CommPass, OneFOneBP2M3WithSendsAndEarlyReceives) {
  EXPECT_EQ(rows(make_schedule("1f1b", 2, 3), false), (std::vector<std::string>{
      "0F0 0SEND_F0 0RECV_B0 0F1 0SEND_F1 0B0 0RECV_B1 0F2 0SEND_F2 0RECV_B2 0B1 0B2",
      "1RECV_F0 1F0 1RECV_F1 1B0 1SEND_B0 1F1 1RECV_F2 1B1 1SEND_B1 1F2 1B2 1SEND_B2"}));
}

TEST(CommPass, GPipeP2M2) {
  EXPECT_EQ(rows(make_schedule("gpipe", 2, 2), false), (std::vector<std::string>{
      "0F0 0SEND_F0 0RECV_B0 0F1 0SEND_F1 0RECV_B1 0B0 0B1",
      "1RECV_F0 1RECV_F1 1F0 1F1 1B0 1SEND_B0 1B1 1SEND_B1"}));
}

TEST(CommPass, MatchingPairs) {
  EXPECT_EQ(matching_comm(parse_action("1SEND_F3")), parse_action("2RECV_F3"));
  EXPECT_EQ(matching_comm(parse_action("2RECV_F3")), parse_action("1SEND_F3"));
  EXPECT_EQ(matching_comm(parse_action("2SEND_B0")), parse_action("1RECV_B0"));
  EXPECT_EQ(matching_comm(parse_action("1RECV_B0")), parse_action("2SEND_B0"));
  EXPECT_THROW(matching_comm(parse_action("1F0")), ScheduleError);
}

TEST(Generators, UnknownNameListsTheKnownOnes) {
  try {
    make_schedule("zigzag", 2, 2);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "unknown schedule 'zigzag'; known schedules: naive, gpipe, 1f1b, zb-h1, interleaved-1f1b, zb-v, or a file "
                 "of actions");
  }
  EXPECT_THROW(make_schedule("gpipe", 0, 2), ConfigError);
  EXPECT_THROW(make_schedule("1f1b", 2, 0), ConfigError);
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

TEST(Generators, ForwardOnlyForEvaluation) {
  const Schedule s = forward_schedule(2, 2);
  EXPECT_TRUE(s.forward_only);
  EXPECT_EQ(rows(s, false), (std::vector<std::string>{"0F0 0SEND_F0 0F1 0SEND_F1", "1RECV_F0 1RECV_F1 1F0 1F1"}));
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

TEST(Placement, StagesOfARankAndTheirChunks) {
  const Schedule il = make_schedule("interleaved-1f1b", 3, 3, 2);  // stage c*p + r on rank r
  EXPECT_EQ(il.stage_rank, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(il.stages_of(1), (std::vector<int>{1, 4}));
  EXPECT_EQ(il.chunk_of(1), 0);
  EXPECT_EQ(il.chunk_of(4), 1);
  const Schedule v = make_schedule("zb-v", 3, 6);  // stage r and 2p-1-r on rank r
  EXPECT_EQ(v.stage_rank, (std::vector<int>{0, 1, 2, 2, 1, 0}));
  EXPECT_EQ(v.stages_of(0), (std::vector<int>{0, 5}));
  EXPECT_EQ(v.stages_of(2), (std::vector<int>{2, 3}));
  EXPECT_EQ(v.chunk_of(5), 1);
  EXPECT_EQ(v.chunk_of(2), 0);
  EXPECT_EQ(make_schedule("1f1b", 2, 2).stages_of(1), (std::vector<int>{1}));
}

TEST(Generators, InterleavedP2V2M4) {
  EXPECT_EQ(rows(interleaved_1f1b_schedule(2, 2, 4), true), (std::vector<std::string>{
      "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3",
      "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3"}));
  // One micro-batch: its forward goes round the two ranks twice, then its backward comes back.
  EXPECT_EQ(rows(interleaved_1f1b_schedule(2, 2, 1), true), (std::vector<std::string>{"0F0 2F0 2B0 0B0", "1F0 3F0 3B0 1B0"}));
  EXPECT_EQ(make_schedule("interleaved-1f1b", 2, 4).name, "interleaved-1f1b");
}

TEST(Generators, InterleavedWithOneChunkIs1F1B) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 16; ++m)
      EXPECT_EQ(interleaved_1f1b_schedule(p, 1, m).ranks, one_f_one_b_schedule(p, m).ranks) << "p=" << p << " m=" << m;
}

// Every p <= 8, v <= 4, m <= 16, whether or not p divides m.
TEST(Generators, InterleavedIsValidForEveryShape) {
  for (int p = 1; p <= 8; ++p)
    for (int v = 1; v <= 4; ++v)
      for (int m = 1; m <= 16; ++m) {
        const Schedule s = insert_comms(interleaved_1f1b_schedule(p, v, m));
        EXPECT_NO_THROW(validate(s)) << "p=" << p << " v=" << v << " m=" << m;
        EXPECT_EQ(s.num_stages(), p * v);
      }
}

TEST(Generators, ZbVP2M4) {
  EXPECT_EQ(rows(zb_v_schedule(2, 4), true), (std::vector<std::string>{
      "0F0 0F1 0F2 3F0 3B0 3F1 3B1 0B0 0F3 0B1 3W0 3W1 3F2 3B2 3F3 3B3 0W0 0B2 0W1 3W2 3W3 0B3 0W2 0W3",
      "1F0 2F0 1F1 2F1 2B0 1B0 2B1 1B1 2W0 1F2 2F2 1F3 2F3 2B2 1W0 1B2 2W1 2B3 1W1 1B3 2W2 1W2 2W3 1W3"}));
  // The turn of the V (stages 1 and 2 on rank 1) and the last stage next to the first on rank 0
  // hand over without messages.
  EXPECT_EQ(rows(make_schedule("zb-v", 2, 1), false), (std::vector<std::string>{
      "3RECV_F0 0F0 0SEND_F0 3F0 3B0 3SEND_B0 0RECV_B0 3W0 0B0 0W0",
      "1RECV_F0 1F0 2RECV_B0 2F0 2SEND_F0 2B0 1B0 1SEND_B0 2W0 1W0"}));
}

TEST(Generators, ZbVIsValidForEveryShapeAndEveryStageHasItsW) {
  for (int p = 1; p <= 8; ++p)
    for (int m = 1; m <= 16; ++m) {
      const Schedule s = insert_comms(zb_v_schedule(p, m));
      EXPECT_NO_THROW(validate(s)) << "p=" << p << " m=" << m;
      int w = 0;
      for (int r = 0; r < p; ++r)
        for (const Action& a : s.ranks[r]) w += a.op == Op::Weight;
      EXPECT_EQ(w, 2 * p * m) << "p=" << p << " m=" << m;
    }
}

TEST(Generators, DefaultChunksAndChunkErrors) {
  EXPECT_EQ(default_chunks("interleaved-1f1b"), 2);
  EXPECT_EQ(default_chunks("zb-v"), 2);
  EXPECT_EQ(default_chunks("1f1b"), 1);
  EXPECT_EQ(default_chunks("some/file.txt"), 1);
  EXPECT_EQ(make_schedule("interleaved-1f1b", 2, 4).num_stages(), 4);
  EXPECT_EQ(make_schedule("interleaved-1f1b", 2, 4, 3).num_stages(), 6);
  EXPECT_EQ(make_schedule("1f1b", 2, 4, 1).ranks, make_schedule("1f1b", 2, 4).ranks);
  auto error = [](const std::string& name, int chunks) -> std::string {
    try {
      make_schedule(name, 2, 4, chunks);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error("1f1b", 2), "the 1f1b schedule runs one stage per rank; for 2 stages per rank use interleaved-1f1b or zb-v");
  EXPECT_EQ(error("zb-h1", 3), "the zb-h1 schedule runs one stage per rank; for 3 stages per rank use interleaved-1f1b or zb-v");
  EXPECT_EQ(error("zb-v", 3), "the zb-v schedule runs exactly 2 stages per rank (a V), got 3");
  EXPECT_EQ(error("zb-v", 1), "the zb-v schedule runs exactly 2 stages per rank (a V), got 1");
  EXPECT_EQ(error("interleaved-1f1b", -1), "stages per rank must be >= 1 (or 0 for the schedule's default), got -1");
  EXPECT_THROW(make_schedule("zb-v", 0, 4), ConfigError);
  EXPECT_THROW(make_schedule("interleaved-1f1b", 2, 0), ConfigError);
}

// Beyond what the planner handles in seconds (and what would overflow an int), one clear line.
TEST(Generators, ScheduleTooLargeToPlanIsRefused) {
  auto error = [](const std::string& name, int ranks, int m, int chunks) -> std::string {
    try {
      make_schedule(name, ranks, m, chunks);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error("1f1b", 2000, 100000, 0),
            "2000 ranks x 1 stage x 100000 micro-batches is more than a schedule is planned for (at most 262144 stage "
            "micro-batches, a few seconds of planning)");
  EXPECT_EQ(error("interleaved-1f1b", 2147483647, 2147483647, 16),
            "2147483647 ranks x 16 stages x 2147483647 micro-batches is more than a schedule is planned for (at most "
            "262144 stage micro-batches, a few seconds of planning)");
}

TEST(Generators, ForwardOnlyForAnyPlacement) {
  const Schedule il = forward_schedule({0, 1, 0, 1}, 2);
  EXPECT_TRUE(il.forward_only);
  EXPECT_EQ(rows(il, false), (std::vector<std::string>{
      "0F0 0SEND_F0 2RECV_F0 0F1 0SEND_F1 2RECV_F1 2F0 2SEND_F0 2F1 2SEND_F1",
      "1RECV_F0 1RECV_F1 1F0 1SEND_F0 3RECV_F0 1F1 1SEND_F1 3RECV_F1 3F0 3F1"}));
  const Schedule v = forward_schedule(make_schedule("zb-v", 2, 2).stage_rank, 2);
  EXPECT_EQ(rows(v, false), (std::vector<std::string>{
      "0F0 0SEND_F0 3RECV_F0 0F1 0SEND_F1 3RECV_F1 3F0 3F1",
      "1RECV_F0 1RECV_F1 1F0 1F1 2F0 2SEND_F0 2F1 2SEND_F1"}));
  for (int p = 1; p <= 8; ++p)
    for (int v = 1; v <= 4; ++v)
      EXPECT_NO_THROW(forward_schedule(interleaved_1f1b_schedule(p, v, 3).stage_rank, 3)) << p << " " << v;
  EXPECT_EQ(forward_schedule(3, 2).ranks, forward_schedule({0, 1, 2}, 2).ranks);
  EXPECT_THROW(forward_schedule({0, 2}, 2), ConfigError);  // rank 1 holds no stage
}

}  // namespace
}  // namespace tpipe
