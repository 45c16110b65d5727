// Golden schedules, the comm pass, and action printing/parsing.
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/generators.h"

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
    EXPECT_STREQ(e.what(), "unknown schedule 'zigzag'; known schedules: naive, gpipe, 1f1b, zb-h1, or a file of actions");
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
