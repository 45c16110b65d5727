// tpipe partition, tpipe plan and tpipe train --plan auto, end to end on a tiny GPT.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>
#include <string>

#include "shell.h"
#include "temp_dir.h"

namespace {

using tpipe::testing::Output;

const char* kTiny = " --layers 2 --dim 32 --heads 2 --seq-len 16 --microbatch-size 2";

Output tpipe(const std::string& args) {
  return tpipe::testing::sh("OPENBLAS_NUM_THREADS=1 " + std::string(TPIPE_BIN) + " " + args);
}

// The layer counts of the "cut --partition 2,4" line.
std::vector<int> cut_of(const std::string& text) {
  std::smatch m;
  const std::regex re("cut +--partition ([0-9,]+)");
  if (!std::regex_search(text, m, re)) return {};
  std::vector<int> sizes;
  std::stringstream in(m[1].str());
  for (std::string tok; std::getline(in, tok, ',');) sizes.push_back(std::stoi(tok));
  return sizes;
}

TEST(PartitionCli, ShowsEveryStageAndACutOfEveryLayer) {
  const Output out = tpipe("partition --stages 2 --repeats 1" + std::string(kTiny));
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("stage  rank  layers"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("    0     0  embed"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("lm_head"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("predicted step"), std::string::npos) << out.text;
  const auto sizes = cut_of(out.text);
  ASSERT_EQ(sizes.size(), 2u) << out.text;
  EXPECT_EQ(sizes[0] + sizes[1], 6) << "embed, pos, 2 blocks, ln_f, lm_head";
}

TEST(PartitionCli, RefusesAMethodItDoesNotKnow) {
  const Output out = tpipe("partition --stages 2 --partition fastest" + std::string(kTiny));
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text.rfind("tpipe partition: partition 'fastest'", 0), 0u) << out.text;
}

TEST(PlanCli, PrintsTheBestLayoutsAndWhatDoesNotFit) {
  Output out = tpipe("plan --ranks 2 --repeats 1 --top 3 --race 0" + std::string(kTiny));
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("\nbest "), std::string::npos) << out.text;
  // The communication it charges was measured by 2 ranks of its own.
  EXPECT_NE(out.text.find("communication measured on 2 ranks: a message "), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("; all-reduce of 2 "), std::string::npos) << out.text;
  // The profile was scaled to the engine's own actions.
  EXPECT_NE(out.text.find("scaled to the engine's own actions (F x"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("run the best:  tpipe train --stages "), std::string::npos) << out.text;
  out = tpipe("plan --ranks 2 --repeats 1 --top 1 --memory-per-rank 1KiB" + std::string(kTiny));
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find(" no   --stages"), std::string::npos) << "nothing fits in 1 KiB: " << out.text;
  out = tpipe("plan --ranks 2 --memory-per-rank lots" + std::string(kTiny));
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe plan: --memory-per-rank 'lots': expected a size such as 2GiB, 512MiB or 1e9\n");
}

// The two layouts predicted fastest race (a margin wide enough for any two); the winner is the
// one measured and run.
TEST(PlanCli, RacesTheClosestAndMeasuresTheWinnerAndTheDefaultInAlternatingRounds) {
  const Output out = tpipe("plan --ranks 2 --repeats 1 --top 2 --race 2 --race-within 1e5 --race-steps 2 --measure 2" +
                           std::string(kTiny));
  ASSERT_EQ(out.status, 0) << out.text;
  const auto race = out.text.find("racing the 2 layouts predicted within 100000 % of the best with tpipe train, 2 "
                                  "alternating rounds of 2 steps each (after 3 that warm up) ...\n");
  ASSERT_NE(race, std::string::npos) << out.text;
  // Both entrants with their measured times, the faster first and marked best.
  const std::regex entrant("measured ([0-9.]+) ms \\([+-][0-9]+%\\)");
  std::istringstream lines(out.text.substr(race));
  std::string line, winner_flags;
  std::getline(lines, line);
  std::vector<double> measured;
  for (int i = 0; i < 2 && std::getline(lines, line); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(line, m, entrant)) << line;
    measured.push_back(std::stod(m[1]));
    if (i == 0) {
      EXPECT_EQ(line.rfind("best ", 0), 0u) << line;
      winner_flags = line.substr(line.find("--stages"), line.find("   measured") - line.find("--stages"));
    }
  }
  ASSERT_EQ(measured.size(), 2u) << out.text;
  EXPECT_LE(measured[0], measured[1]) << out.text;
  EXPECT_NE(out.text.find("run the best:  tpipe train " + winner_flags + "\n"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("3 alternating rounds of 2 steps each (after 3 that warm up)"), std::string::npos) << out.text;
  for (const char* row : {"\nbest ", "\ndefault "}) {
    const auto at = out.text.rfind(row);
    ASSERT_NE(at, std::string::npos) << row << out.text;
    const std::string line = out.text.substr(at + 1, out.text.find('\n', at + 1) - at - 1);
    EXPECT_TRUE(std::regex_search(line, std::regex("measured [0-9.]+ ms \\([+-][0-9]+%\\)$"))) << line;
  }
  EXPECT_NE(out.text.find("predicted: pipeline "), std::string::npos) << out.text;
}

TEST(PlanCli, TrainRunsThePlannedLayout) {
  tpipe::testing::TempDir dir;
  const Output out = tpipe("train --plan auto --steps 2 --eval-every 2 --sample-chars 0 --checkpoints - --out " +
                           dir.path + kTiny);
  ASSERT_EQ(out.status, 0) << out.text;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out.text, m, std::regex("tpipe train: plan auto: --stages (\\d) --dp (\\d)")))
      << out.text;
  EXPECT_EQ(std::stoi(m[1]) * std::stoi(m[2]), 2) << "the same 2 ranks, laid out by the planner";
  EXPECT_NE(out.text.find("validation loss"), std::string::npos) << out.text;
}

}  // namespace
