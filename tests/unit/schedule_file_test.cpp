// Schedules from a file: a hand-written ZB-H1 equals the generator's; the grid `tpipe simulate`
// prints reads back; a missing W, a W before its B, a deadlock and malformed lines are refused
// before anything runs, naming the file and the line.
#include <gtest/gtest.h>

#include <fstream>

#include "temp_dir.h"
#include "tpipe/error.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/schedule_file.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {
namespace {

std::string error_of(const std::string& text, int p, int m) {
  testing::TempDir dir("tpipe_schedfile");
  const std::string path = dir.path + "/s.txt";
  std::ofstream(path) << text;
  try {
    make_schedule(path, p, m);
  } catch (const Error& e) {
    const std::string what = e.what();
    return what.substr(what.find("s.txt"));  // without the temporary directory
  }
  return "no error";
}

TEST(ScheduleFile, AHandWrittenZbH1IsTheGeneratedOne) {
  testing::TempDir dir("tpipe_schedfile");
  const std::string path = dir.path + "/zb.txt";
  std::ofstream(path) << "# zb-h1, 2 stages, 3 micro-batches\n"
                         "0F0 0F1 0B0 0W0 0F2 0B1 0W1 0B2 0W2\n"
                         "\n"
                         "rank 1 | 1F0 1B0 1F1 1B1 1W0 1F2 1B2 1W1 1W2---- .  # pasted from the grid\n";
  const Schedule from_file = make_schedule(path, 2, 3);
  const Schedule generated = make_schedule("zb-h1", 2, 3);
  EXPECT_EQ(from_file.ranks, generated.ranks);
  EXPECT_EQ(simulate(from_file).makespan, simulate(generated).makespan);
}

TEST(ScheduleFile, RefusesWhatCannotRun) {
  EXPECT_EQ(error_of("0F0 0F1 0B0 0W0 0B1\n1F0 1B0 1W0 1F1 1B1 1W1\n", 2, 2).substr(0, 102),
            "s.txt schedule: rank 0: 0B1 has no 0W1: stage 0 splits its backwards, so every micro-batch needs its W");
  EXPECT_EQ(error_of("0F0 0B0\n1F0 1W0 1B0\n", 2, 1).substr(0, 45), "s.txt schedule: rank 1: 1W0 comes before 1B0\n");
  // Rank 1 waits for micro-batch 1 while rank 0 waits for the gradient of micro-batch 0: a
  // deadlock, shown on the grid.
  const std::string dead = error_of("0F0 0B0 0F1 0B1\n1F1 1F0 1B0 1B1\n", 2, 2);
  EXPECT_NE(dead.find("s.txt schedule: no rank can proceed\n  rank 0 waits at 0B0 for 1SEND_B0 on rank 1\n  rank 1 "
                      "waits at 1F1 for 0SEND_F1 on rank 0\n"),
            std::string::npos)
      << dead;
  EXPECT_EQ(error_of("0F0 0B0\n1F0 1X0\n", 2, 1).substr(0, 40), "s.txt line 2: cannot parse action '1X0':");
  EXPECT_EQ(error_of("0F0 0B0\n0F0 0B0\n", 2, 1),
            "s.txt line 2: 0F0 puts stage 0 on rank 1, but line 1 already put it on rank 0 (a stage lives on one rank)");
  EXPECT_EQ(error_of("0F0 0B0\n1F0 1B0\n2F0\n", 2, 1),
            "s.txt line 3: a line for rank 2, but there are 2 ranks (one line per rank)");
  EXPECT_EQ(error_of("0F0 0B0\n", 2, 1), "s.txt has 1 ranks' lines, but there are 2 ranks");
  EXPECT_EQ(error_of("0F0 0SEND_F0 0B0\n1F0 1B0\n", 2, 1),
            "s.txt line 1: 0SEND_F0: a schedule file lists F, B and W only (sends, receives and the end of the step "
            "are added)");
  EXPECT_EQ(error_of("0F0 0F1 0B0 0B1\n1F0 1F1 1B0 1B1\n", 2, 3), "s.txt uses 2 micro-batches, but there are 3");
}

}  // namespace
}  // namespace tpipe

namespace tpipe {
namespace {

// Two stages per rank: the line a stage is on places it, the stage count is inferred.
TEST(ScheduleFile, SeveralStagesPerRank) {
  testing::TempDir dir("tpipe_schedfile");
  const std::string path = dir.path + "/il.txt";
  std::ofstream(path) << "# interleaved-1f1b, 2 ranks, 2 stages each, 4 micro-batches\n"
                         "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3\n"
                         "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3\n";
  const Schedule from_file = make_schedule(path, 2, 4);
  EXPECT_EQ(from_file.stage_rank, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_EQ(from_file.ranks, make_schedule("interleaved-1f1b", 2, 4).ranks);
  EXPECT_EQ(make_schedule(path, 2, 4, 2).ranks, from_file.ranks);  // chunks given: checked
  try {
    make_schedule(path, 2, 4, 3);
    FAIL();
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.substr(what.find("il.txt")),
              "il.txt places 4 stages on 2 ranks, but 3 stages per rank were asked for (0 takes the file's placement)");
  }
  // ZB-V's V: rank 0 holds the first and the last stage.
  const std::string v = dir.path + "/v.txt";
  std::ofstream(v) << "0F0 3F0 3B0 3W0 0B0 0W0\n1F0 2F0 2B0 1B0 2W0 1W0\n";
  EXPECT_EQ(make_schedule(v, 2, 1).stage_rank, (std::vector<int>{0, 1, 1, 0}));
}

TEST(ScheduleFile, RefusesAStageOnTwoRanksOrAGap) {
  EXPECT_EQ(error_of("0F0 2F0 2B0 0B0\n1F0 2F0 2B0 1B0\n", 2, 1),
            "s.txt line 2: 2F0 puts stage 2 on rank 1, but line 1 already put it on rank 0 (a stage lives on one rank)");
  EXPECT_EQ(error_of("0F0 3F0 3B0 0B0\n1F0 1B0\n", 2, 1),
            "s.txt line 1: stage 3 (rank 0) makes 4 stages, but stage 2 is on no rank's line");
}

}  // namespace
}  // namespace tpipe
