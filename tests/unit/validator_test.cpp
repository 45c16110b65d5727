// The validator rejects malformed and deadlocking schedules and shows where, on the grid.
#include <gtest/gtest.h>

#include <algorithm>

#include "tpipe/error.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/step_end.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

Schedule two_ranks(const std::string& r0, const std::string& r1, int m) {
  Schedule s;
  s.name = "planted";
  s.num_microbatches = m;
  s.stage_rank = {0, 1};
  s.ranks = {parse_actions(r0), parse_actions(r1)};
  return s;
}

std::string error_of(const Schedule& s) {
  try {
    validate(s);
  } catch (const ScheduleError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Validator, AcceptsEveryGeneratedSchedule) {
  for (const auto& name : schedule_names())
    for (int p : {1, 2, 3, 4, 5})
      for (int m : {1, 2, 3, 4, 8}) EXPECT_NO_THROW(validate(make_schedule(name, p, m))) << name << p << m;
}

// Rank 0 waits for the gradient of micro-batch 0 before it sends micro-batch 1; rank 1 wants
// micro-batch 1's activation before it runs the backward that produces that gradient.
TEST(Validator, FindsAPlantedDeadlockAndMarksTheStuckActions) {
  const Schedule s = two_ranks(
      "0F0 0SEND_F0 0RECV_B0 0B0 0F1 0SEND_F1 0RECV_B1 0B1",
      "1RECV_F0 1RECV_F1 1F0 1F1 1B1 1SEND_B1 1B0 1SEND_B0", 2);
  EXPECT_EQ(error_of(s),
            "deadlock in planted schedule: no rank can proceed\n"
            "  rank 0 waits at 0B0 for 1SEND_B0 on rank 1\n"
            "  rank 1 waits at 1F1 for 0SEND_F1 on rank 0\n"
            "rank 0 | 0F0 0SEND_F0 0RECV_B0 >0B0< 0F1 0SEND_F1 0RECV_B1 0B1\n"
            "rank 1 | 1RECV_F0 1RECV_F1 1F0 >1F1< 1B1 1SEND_B1 1B0 1SEND_B0\n");
}

TEST(Validator, FindsAPlantedMissingBackward) {
  const Schedule s = two_ranks(
      "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0RECV_B1 0B0 0B1",
      "1RECV_F0 1RECV_F1 1F0 1F1 1B0 1SEND_B0 1SEND_B1", 2);
  const std::string e = error_of(s);
  EXPECT_EQ(e.substr(0, e.find('\n')), "invalid planted schedule: rank 1: backward 1B1 is missing");
}

TEST(Validator, AStageThatSplitsItsBackwardNeedsEveryW) {
  Schedule one;
  one.name = "planted";
  one.num_microbatches = 2;
  one.stage_rank = {0};
  one.ranks = {parse_actions("0F0 0F1 0B0 0W0 0B1")};
  EXPECT_EQ(error_of(one), "invalid planted schedule: rank 0: 0B1 has no 0W1: stage 0 splits its backwards, so every "
                           "micro-batch needs its W\n"
                           "rank 0 | 0F0 0F1 0B0 0W0 >0B1<\n");
  one.ranks = {parse_actions("0F0 0F1 0W0 0B0 0B1 0W1")};
  EXPECT_EQ(error_of(one), "invalid planted schedule: rank 0: 0W0 comes before 0B0\n"
                           "rank 0 | 0F0 0F1 >0W0< 0B0 0B1 0W1\n");
  one.ranks = {parse_actions("0F0 0F1 0B0 0W0 0B1 0W1 0STEP 0W1")};
  EXPECT_NE(error_of(one).find("0W1 is repeated"), std::string::npos);
}

TEST(Validator, BackwardBeforeForwardIsMarked) {
  const Schedule s = two_ranks("0B0 0F0", "", 1);
  Schedule one = s;
  one.stage_rank = {0};
  one.ranks.pop_back();
  EXPECT_EQ(error_of(one), "invalid planted schedule: rank 0: 0B0 comes before its forward 0F0\n"
                           "rank 0 | >0B0< 0F0\n");
}

TEST(Validator, SendWithoutReceive) {
  const Schedule s = two_ranks(
      "0F0 0SEND_F0 0RECV_B0 0B0",
      "1F0 1B0 1SEND_B0", 1);
  const std::string e = error_of(s);
  EXPECT_EQ(e.substr(0, e.find('\n')), "invalid planted schedule: rank 1: 1F0 needs 1RECV_F0, which is missing");
}

TEST(Validator, ExtraReceiveHasNoMatchingSend) {
  Schedule s = make_schedule("gpipe", 2, 1);
  s.ranks[0].insert(s.ranks[0].begin(), parse_action("0RECV_F0"));
  const std::string e = error_of(s);
  EXPECT_EQ(e.substr(0, e.find('\n')),
            "invalid gpipe schedule: rank 0: 0RECV_F0 receives from stage -1, which does not exist");
}

TEST(Validator, RepeatedAndOutOfRange) {
  Schedule s = make_schedule("gpipe", 2, 1);
  s.ranks[0].push_back(parse_action("0F0"));
  EXPECT_NE(error_of(s).find("0F0 is repeated"), std::string::npos);
  s = make_schedule("gpipe", 2, 1);
  s.ranks[0].push_back(parse_action("0F3"));
  EXPECT_NE(error_of(s).find("0F3 names micro-batch 3, but there are 1"), std::string::npos);
  s = make_schedule("gpipe", 2, 1);
  s.ranks[0].push_back(parse_action("1F0"));
  EXPECT_NE(error_of(s).find("1F0 is listed on rank 0, but stage 1 lives on rank 1"), std::string::npos);
}

TEST(Validator, ReceiveAfterItsConsumer) {
  const Schedule s = two_ranks(
      "0F0 0SEND_F0 0RECV_B0 0B0",
      "1F0 1RECV_F0 1B0 1SEND_B0", 1);
  const std::string e = error_of(s);
  EXPECT_EQ(e.substr(0, e.find('\n')), "invalid planted schedule: rank 1: 1F0 comes before 1RECV_F0");
}

TEST(Validator, StepEndBeforeLastBackward) {
  Schedule s = make_schedule("gpipe", 1, 2);
  s.ranks[0].insert(s.ranks[0].begin() + 3, parse_action("0STEP"));
  EXPECT_NE(error_of(s).find("0STEP comes before 0B1"), std::string::npos);
  s = make_schedule("gpipe", 1, 2);
  s.ranks[0].push_back(parse_action("0REDUCE_DP"));
  s.ranks[0].push_back(parse_action("0STEP"));
  EXPECT_EQ(error_of(s), "no error");
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

TEST(StepEnd, AppendsReductionsAfterTheLastBackward) {
  const Schedule s = append_step_end(make_schedule("1f1b", 3, 2), {{0, 2}}, true);
  EXPECT_EQ(to_string(s.ranks[0]),
            "0F0 0SEND_F0 0RECV_B0 0F1 0SEND_F1 0RECV_B1 0B0 0B1 0REDUCE_TIED 0REDUCE_DP 0STEP");
  EXPECT_EQ(to_string(s.ranks[1]).substr(to_string(s.ranks[1]).size() - 25), "1SEND_B1 1REDUCE_DP 1STEP");
  EXPECT_EQ(to_string(s.ranks[2]).substr(to_string(s.ranks[2]).size() - 42),
            "2B1 2SEND_B1 2REDUCE_TIED 2REDUCE_DP 2STEP");
  EXPECT_NO_THROW(validate(s));
}

TEST(StepEnd, TiedStageWithoutItsReductionIsRejected) {
  Schedule s = append_step_end(make_schedule("gpipe", 2, 1), {{0, 1}}, false);
  EXPECT_EQ(to_string(s.ranks[1]), "1RECV_F0 1F0 1B0 1SEND_B0 1REDUCE_TIED 1STEP");
  s.ranks[0].erase(s.ranks[0].end() - 2);  // drop 0REDUCE_TIED
  EXPECT_EQ(error_of(s).substr(0, error_of(s).find('\n')),
            "invalid gpipe schedule: rank 0: 0STEP needs 0REDUCE_TIED: stage 0 shares a weight with other stages");
}

// A STEP waits for the REDUCE_TIED of every stage it shares a weight with. Here stage 1 steps
// before it sends stage 0 the gradient that stage 0 needs to reach its REDUCE_TIED.
TEST(StepEnd, TiedCollectiveDeadlockIsFoundBySimulation) {
  Schedule s;
  s.name = "planted";
  s.num_microbatches = 1;
  s.stage_rank = {0, 1};
  s.tied_stages = {{0, 1}};
  s.ranks = {parse_actions("0F0 0SEND_F0 0RECV_B0 0B0 0REDUCE_TIED 0STEP"),
             parse_actions("1RECV_F0 1F0 1B0 1REDUCE_TIED 1STEP 1SEND_B0")};
  EXPECT_EQ(error_of(s),
            "deadlock in planted schedule: no rank can proceed\n"
            "  rank 0 waits at 0B0 for 1SEND_B0 on rank 1\n"
            "  rank 1 waits at 1STEP for 0REDUCE_TIED on rank 0\n"
            "rank 0 | 0F0 0SEND_F0 0RECV_B0 >0B0< 0REDUCE_TIED 0STEP\n"
            "rank 1 | 1RECV_F0 1F0 1B0 1REDUCE_TIED >1STEP< 1SEND_B0\n");
}

TEST(StepEnd, SimulatorWaitsForTiedPartners) {
  Schedule s = append_step_end(make_schedule("gpipe", 2, 1), {{0, 1}}, false);
  // Move 1REDUCE_TIED behind 1STEP by hand on a copy: 1STEP then fails the order check.
  std::swap(s.ranks[1][4], s.ranks[1][5]);
  EXPECT_NE(error_of(s).find("1STEP comes before 1REDUCE_TIED"), std::string::npos);
}

TEST(StepEnd, ReduceTiedOnAnUntiedStageIsRejected) {
  Schedule s = append_step_end(make_schedule("gpipe", 2, 1), {}, false);
  s.ranks[1].insert(s.ranks[1].end() - 1, parse_action("1REDUCE_TIED"));
  EXPECT_NE(error_of(s).find("1REDUCE_TIED, but stage 1 shares no weight with another stage"), std::string::npos);
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

std::string first_line(const Schedule& s) {
  const std::string e = error_of(s);
  return e.substr(0, e.find('\n'));
}

TEST(Validator, AcceptsEveryScheduleWithSeveralStagesPerRank) {
  for (int p : {1, 2, 3, 4})
    for (int m : {1, 2, 3, 4, 8}) {
      EXPECT_NO_THROW(validate(make_schedule("zb-v", p, m))) << p << " " << m;
      for (int v : {2, 3}) EXPECT_NO_THROW(validate(make_schedule("interleaved-1f1b", p, m, v))) << p << " " << m;
    }
}

// ZB-V, p = 2: rank 0 holds stages 0 and 3, rank 1 stages 1 and 2. (A stage splits its
// backwards when it has any W, so the planted gap leaves stage 2 the W of another micro-batch.)
TEST(Validator, ZbVWithAMissingOrEarlyW) {
  Schedule s = make_schedule("zb-v", 2, 2);
  auto& r1 = s.ranks[1];
  r1.erase(std::find(r1.begin(), r1.end(), parse_action("2W1")));
  EXPECT_EQ(first_line(s), "invalid zb-v schedule: rank 1: 2B1 has no 2W1: stage 2 splits its backwards, so every "
                           "micro-batch needs its W");
  s = make_schedule("zb-v", 2, 1);
  auto& r0 = s.ranks[0];
  r0.erase(std::find(r0.begin(), r0.end(), parse_action("3W0")));
  r0.insert(std::find(r0.begin(), r0.end(), parse_action("3B0")), parse_action("3W0"));
  EXPECT_EQ(first_line(s), "invalid zb-v schedule: rank 0: 3W0 comes before 3B0");
}

// The end of the step waits for every stage of its rank: here rank 0 steps after stage 0's
// backward but before that of its other stage, 3.
TEST(Validator, StepEndBeforeABackwardOfTheRanksOtherStage) {
  Schedule s = append_step_end(make_schedule("zb-v", 2, 1), {}, false);
  auto& r0 = s.ranks[0];
  ASSERT_EQ(to_string(r0), "3RECV_F0 0F0 0SEND_F0 3F0 3B0 3SEND_B0 0RECV_B0 3W0 0B0 0W0 0STEP");
  r0 = parse_actions("3RECV_F0 0F0 0SEND_F0 3F0 0RECV_B0 0B0 0W0 0STEP 3B0 3SEND_B0 3W0");
  EXPECT_EQ(first_line(s), "invalid zb-v schedule: rank 0: 0STEP comes before 3B0");
  r0 = parse_actions("3RECV_F0 0F0 0SEND_F0 3F0 3B0 3SEND_B0 0RECV_B0 0B0 0W0 0STEP 3W0");
  EXPECT_EQ(first_line(s), "invalid zb-v schedule: rank 0: 0STEP comes before 3W0");
}

TEST(Validator, StepEndIsNamedByTheRanksLowestStage) {
  Schedule s = append_step_end(make_schedule("zb-v", 2, 1), {}, false);
  s.ranks[0].back() = parse_action("3STEP");
  EXPECT_EQ(first_line(s), "invalid zb-v schedule: rank 0: 3STEP is named by stage 3, but rank 0's end of step is "
                           "named by its lowest stage, 0");
  s = append_step_end(make_schedule("zb-v", 2, 1), {}, false);
  s.ranks[0].push_back(parse_action("3STEP"));  // a second STEP on the rank
  EXPECT_NE(error_of(s).find("3STEP is named by stage 3"), std::string::npos);
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

// ZB-V puts the first and the last stage on rank 0: an input embedding tied to the output
// projection is one rank's business, so no rank reduces tied gradients.
TEST(StepEnd, OncePerRankAndNoReductionForATieWithinOneRank) {
  const Schedule s = append_step_end(make_schedule("zb-v", 2, 4), {{0, 3}}, true);
  const std::string r0 = to_string(s.ranks[0]), r1 = to_string(s.ranks[1]);
  EXPECT_EQ(r0.substr(r0.size() - 20), "0W3 0REDUCE_DP 0STEP");
  EXPECT_EQ(r1.substr(r1.size() - 20), "1W3 1REDUCE_DP 1STEP");
  EXPECT_NO_THROW(validate(s));
  Schedule planted = s;
  planted.ranks[0].insert(planted.ranks[0].end() - 2, parse_action("0REDUCE_TIED"));
  EXPECT_EQ(first_line(planted), "invalid zb-v schedule: rank 0: 0REDUCE_TIED, but stages 0 and 3 share no weight with "
                                 "a stage on another rank");
}

// Interleaved, p = 4, v = 2: stage 0 on rank 0, the last stage (7) on rank 3. Ranks 0 and 3
// reduce the tie, named by their lowest stages 0 and 3; each STEP waits for the other's.
TEST(StepEnd, InterleavedTieAcrossRanks) {
  const Schedule s = append_step_end(make_schedule("interleaved-1f1b", 4, 4), {{0, 7}}, false);
  const std::vector<std::string> tails{"0REDUCE_TIED 0STEP", "1STEP", "2STEP", "3REDUCE_TIED 3STEP"};
  for (int r = 0; r < 4; ++r) {
    const std::string row = to_string(s.ranks[r]);
    EXPECT_EQ(row.substr(row.size() - tails[r].size() - 1), " " + tails[r]) << row;
  }
  EXPECT_EQ(tied_partner_ranks(s, 0), (std::vector<int>{3}));
  EXPECT_EQ(tied_partner_ranks(s, 3), (std::vector<int>{0}));
  EXPECT_TRUE(tied_partner_ranks(s, 1).empty());
  EXPECT_NO_THROW(validate(s));
  Schedule planted = s;
  planted.ranks[3].erase(planted.ranks[3].end() - 2);  // drop 3REDUCE_TIED
  EXPECT_EQ(first_line(planted), "invalid interleaved-1f1b schedule: rank 3: 3STEP needs 3REDUCE_TIED: stages 3 and 7 "
                                 "share a weight with stages on other ranks");
}

// Rank 1 steps before it sends the gradient rank 0 needs to reach its REDUCE_TIED; its STEP
// waits for 0REDUCE_TIED, named by rank 0's lowest stage: a deadlock, found by simulation.
TEST(StepEnd, InterleavedTiedCollectiveDeadlock) {
  Schedule s = append_step_end(make_schedule("interleaved-1f1b", 2, 1), {{0, 3}}, false);
  auto& r1 = s.ranks[1];
  ASSERT_EQ(to_string({r1.end() - 4, r1.end()}), "1B0 1SEND_B0 1REDUCE_TIED 1STEP");
  r1.erase(r1.end() - 3, r1.end());
  for (const char* a : {"1REDUCE_TIED", "1STEP", "1SEND_B0"}) r1.push_back(parse_action(a));
  const std::string e = error_of(s);
  EXPECT_NE(e.find("  rank 0 waits at 0B0 for 1SEND_B0 on rank 1\n  rank 1 waits at 1STEP for 0REDUCE_TIED on rank 0\n"),
            std::string::npos)
      << e;
}

}  // namespace
}  // namespace tpipe
