// `tpipe simulate` end to end: JSON keys and exact values, the table, and bad flags.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shell.h"

namespace {

using tpipe::testing::Output;

Output tpipe(const std::string& args) { return tpipe::testing::sh(std::string(TPIPE_BIN) + " " + args); }

TEST(SimulateCli, JsonHasTheExactBubbleAndTheActions) {
  for (const char* s : {"gpipe", "1f1b"}) {
    const auto out = tpipe(std::string("simulate --schedule ") + s + " --stages 4 --microbatches 6 --json");
    ASSERT_EQ(out.status, 0) << out.text;
    const auto j = nlohmann::json::parse(out.text);
    EXPECT_EQ(j["schedule"], s);
    EXPECT_EQ(j["stages"], 4);
    EXPECT_EQ(j["microbatches"], 6);
    EXPECT_EQ(j["makespan"].get<double>(), 27.0);
    EXPECT_EQ(j["bubble"].get<double>(), 3.0 / 9.0);
    EXPECT_EQ(j["bubble_per_rank"].size(), 4u);
    EXPECT_EQ(j["peak_inflight_per_rank"].size(), 4u);
    ASSERT_EQ(j["actions"].size(), 4u);
    EXPECT_EQ(j["actions"][3].size(), 12u);
  }
  const auto j = nlohmann::json::parse(tpipe("simulate --schedule 1f1b --stages 2 --microbatches 3 --json").text);
  EXPECT_EQ(j["actions"], nlohmann::json::parse(R"([["0F0","0F1","0B0","0F2","0B1","0B2"],
                                                    ["1F0","1B0","1F1","1B1","1F2","1B2"]])"));
  EXPECT_EQ(j["peak_inflight_per_rank"], nlohmann::json::parse("[2,1]"));
}

TEST(SimulateCli, CostsChangeTheMakespan) {
  const auto j = nlohmann::json::parse(tpipe("simulate --schedule gpipe -p 2 -m 2 --costs 1,1 --json").text);
  EXPECT_EQ(j["makespan"].get<double>(), 6.0);
}

// ZB-H1 splits each backward into B and W, so it takes three costs (default 1,1,1).
TEST(SimulateCli, ZbH1TakesForwardInputAndWeightCosts) {
  const auto j = nlohmann::json::parse(tpipe("simulate --schedule zb-h1 -p 4 -m 8 --json").text);
  EXPECT_EQ(j["makespan"].get<double>(), 27.0);  // 3m + p - 1
  EXPECT_EQ(j["bubble"].get<double>(), 3.0 / 27.0);
  EXPECT_EQ(j["costs"]["weight"].get<double>(), 1.0);
  EXPECT_EQ(j["peak_inflight_per_rank"], nlohmann::json::parse("[4,3,2,1]"));
  EXPECT_EQ(j["actions"][3][8], "3W0");  // 3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3W0
  const auto slow_w = nlohmann::json::parse(tpipe("simulate --schedule zb-h1 -p 2 -m 2 --costs 1,1,2 --json").text);
  EXPECT_EQ(slow_w["makespan"].get<double>(), 9.0);  // rank 1: F0 B0 F1 B1 W0 W1 = 1+1+1+1+2+2 after F0 of rank 0
  const auto out = tpipe("simulate --schedule zb-h1 --costs 1,2");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe simulate: --costs '1,2': expected F,B,W[,COMM] such as 1,1,1 (non-negative numbers)\n");
  const auto table = tpipe("simulate --schedule zb-h1 -p 4 -m 8");
  EXPECT_NE(table.text.find("makespan 27, bubble 11.1% (ZB-H1 with F = B = W and m >= p: (p-1)/(3m+p-1) = 11.1%)"),
            std::string::npos)
      << table.text;
}

// Several stages per rank: the JSON gives the placement, the closed forms hold, the header names
// which stages each rank holds, the SVG is written.
TEST(SimulateCli, VirtualStages) {
  auto j = nlohmann::json::parse(tpipe("simulate --schedule interleaved-1f1b -p 4 -m 8 --json").text);
  EXPECT_EQ(j["stages"], 8);
  EXPECT_EQ(j["ranks"], 4);
  EXPECT_EQ(j["placement"], nlohmann::json::parse("[0,1,2,3,0,1,2,3]"));
  EXPECT_EQ(j["makespan"].get<double>(), 57.0);  // 3(vm + p - 1)
  EXPECT_EQ(j["bubble"].get<double>(), 3.0 / 19.0);
  EXPECT_EQ(j["peak_inflight_per_rank"], nlohmann::json::parse("[11,9,7,5]"));
  ASSERT_EQ(j["actions"].size(), 4u);
  EXPECT_EQ(j["actions"][0].size(), 32u);  // 2 chunks x 8 micro-batches x (F, B)
  j = nlohmann::json::parse(tpipe("simulate --schedule interleaved-1f1b -p 4 -m 8 --virtual-stages 3 --json").text);
  EXPECT_EQ(j["stages"], 12);
  EXPECT_EQ(j["makespan"].get<double>(), 81.0);
  j = nlohmann::json::parse(tpipe("simulate --schedule zb-v -p 2 -m 4 --json").text);
  EXPECT_EQ(j["placement"], nlohmann::json::parse("[0,1,1,0]"));
  EXPECT_EQ(j["makespan"].get<double>(), 25.0);  // F = B = W = 1 by default: 6m + p - 1
  EXPECT_EQ(j["costs"]["weight"].get<double>(), 1.0);
  EXPECT_EQ(j["peak_inflight_per_rank"], nlohmann::json::parse("[4,4]"));
  EXPECT_EQ(j["actions"][0], nlohmann::json::parse(R"(["0F0","0F1","0F2","3F0","3B0","3F1","3B1","0B0","0F3","0B1",
      "3W0","3W1","3F2","3B2","3F3","3B3","0W0","0B2","0W1","3W2","3W3","0B3","0W2","0W3"])"));
  const auto table = tpipe("simulate --schedule interleaved-1f1b -p 4 -m 8 --costs 1,2");
  ASSERT_EQ(table.status, 0) << table.text;
  EXPECT_EQ(table.text.substr(0, table.text.find('\n')),
            "interleaved-1f1b: 8 stages on 4 ranks (rank 0: 0 4, rank 1: 1 5, rank 2: 2 6, rank 3: 3 7), 8 "
            "micro-batches, costs F=1 B=2");
  EXPECT_NE(table.text.find("makespan 57, bubble 15.8% (ideal for m >= p (p-1)/(vm+p-1) = 15.8%)"), std::string::npos)
      << table.text;
  EXPECT_NE(table.text.find("rank 0 | 0F0 0F1 0F2 0F3 4F0 "), std::string::npos) << table.text;
  const std::string svg = ::testing::TempDir() + "tpipe_simulate_zbv_" + std::to_string(getpid()) + ".svg";
  const auto drawn = tpipe("simulate --schedule zb-v -p 2 -m 4 --svg " + svg);
  ASSERT_EQ(drawn.status, 0) << drawn.text;
  std::FILE* f = std::fopen(svg.c_str(), "r");
  ASSERT_NE(f, nullptr) << svg;
  std::string picture;
  for (int c; (c = std::fgetc(f)) != EOF;) picture += static_cast<char>(c);
  std::fclose(f);
  std::remove(svg.c_str());
  EXPECT_NE(picture.find("<svg"), std::string::npos);
  EXPECT_NE(picture.find("2 ranks"), std::string::npos);  // the title: "zb-v · 4 stages on 2 ranks · ..."
  const auto bad = tpipe("simulate --schedule 1f1b --virtual-stages 2");
  EXPECT_EQ(bad.status, 1);
  EXPECT_EQ(bad.text,
            "tpipe simulate: the 1f1b schedule runs one stage per rank; for 2 stages per rank use interleaved-1f1b or "
            "zb-v\n");
  EXPECT_EQ(tpipe("simulate --schedule zb-v --virtual-stages 3").text,
            "tpipe simulate: the zb-v schedule runs exactly 2 stages per rank (a V), got 3\n");
}

TEST(SimulateCli, TableShowsBubbleAndChart) {
  const auto out = tpipe("simulate --schedule gpipe --stages 2 --microbatches 2 --costs 1,1");
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("makespan 6, bubble 33.3% (ideal (p-1)/(m+p-1) = 33.3%)"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("rank 0 | 0F0 0F1  .   .  0B0 0B1\n"), std::string::npos) << out.text;
}

TEST(SimulateCli, BadFlagsGiveOneLineAndNonZeroExit) {
  auto out = tpipe("simulate --schedule zigzag --stages 2 --microbatches 2");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe simulate: unknown schedule 'zigzag'; known schedules: naive, gpipe, 1f1b, zb-h1, interleaved-1f1b, zb-v, or a file of actions\n");
  out = tpipe("simulate --stages 0");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe simulate: 1f1b schedule needs stages >= 1 and micro-batches >= 1, got 0 stages and 8 micro-batches\n");
  out = tpipe("simulate --costs 1,x");
  EXPECT_EQ(out.status, 1);
  EXPECT_NE(out.text.find("--costs '1,x'"), std::string::npos);
  EXPECT_NE(tpipe("simulate --bogus").status, 0);
  EXPECT_NE(tpipe("frobnicate").status, 0);
}

}  // namespace

namespace {

// Bad flags of `tpipe train` stop it before any rank starts, with one line.
TEST(TrainCli, BadFlagsGiveOneLineBeforeAnyRankStarts) {
  auto out = tpipe("train --schedule zigzag");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train: unknown schedule 'zigzag'; known schedules: naive, gpipe, 1f1b, zb-h1, interleaved-1f1b, zb-v, or a file of actions\n");
  out = tpipe("train --stages 9 --layers 2");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe train: --stages 9 is more than the 6 layers to cut (embed, pos, 2 blocks, ln_f, lm_head); use fewer "
            "stages or more --layers\n");
  out = tpipe("train --dim 65 --heads 4");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train: --dim 65 is not divisible by --heads 4\n");
  out = tpipe("train --optimizer lion");
  EXPECT_EQ(out.text, "tpipe train: --optimizer must be sgd, adam or adamw, got 'lion'\n");
  out = tpipe("train --data /nonexistent/corpus.txt");
  EXPECT_EQ(out.text, "tpipe train: cannot read --data /nonexistent/corpus.txt: no such file, or not readable\n");
  out = tpipe("train --partition 1,1 --stages 3");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train: partition '1,1' has 2 stages, but 3 were asked for\n");
}

TEST(TrainCli, HelpExplainsEveryFlag) {
  const auto out = tpipe("train --help");
  EXPECT_EQ(out.status, 0);
  for (const char* flag : {"--stages", "--dp", "--microbatches", "--microbatch-size", "--schedule", "--partition",
                           "--layers", "--dim", "--heads", "--seq-len", "--steps", "--lr", "--optimizer", "--clip",
                           "--seed", "--data", "--out", "--trace", "--timeline", "--metrics", "--config"})
    EXPECT_NE(out.text.find(flag), std::string::npos) << flag;
}

}  // namespace

namespace {

// Beyond what is drawn, the plan is simulated from its compute actions and summarised; the JSON
// says what it leaves out.
TEST(SimulateCli, PlansAtScaleAsASummary) {
  const auto out = tpipe("simulate --schedule 1f1b --stages 1024 --microbatches 8192");
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("makespan 27645, bubble 11.1% (ideal (p-1)/(m+p-1) = 11.1%)\n"
                          "bubble per rank 11.1% to 11.1%; peak in-flight at most 1024 (rank 0)\nplanned in "),
            std::string::npos)
      << out.text;
  EXPECT_NE(out.text.find(" from 16777216 compute actions\n(the per-rank table, the grid, --svg and --json's actions "
                          "are left out: they are for plans up to 262144 stage micro-batches, this one has 8388608)"),
            std::string::npos)
      << out.text;
  const auto j = nlohmann::json::parse(tpipe("simulate --schedule zb-h1 -p 512 -m 1024 --json").text);
  EXPECT_EQ(j["makespan"].get<double>(), 3.0 * 1024 + 511);
  EXPECT_FALSE(j.contains("actions"));
  EXPECT_EQ(j["left_out"], "the per-rank table, the grid, --svg and --json's actions are left out: they are for plans "
                           "up to 262144 stage micro-batches, this one has 524288");
  EXPECT_EQ(j["peak_inflight_per_rank"].size(), 512u);
  const auto svg = tpipe("simulate -p 1024 -m 512 --svg big.svg");
  EXPECT_EQ(svg.status, 1);
  EXPECT_EQ(svg.text.rfind("tpipe simulate: --svg: the per-rank table", 0), 0u) << svg.text;
}

// With --dp each pipeline rank all-reduces its stages' gradients in a ring over the replicas once
// its part of the pipeline is done: 2(n-1) latency + 2(n-1)/n bytes/bandwidth.
TEST(SimulateCli, DataParallelAddsTheRingAllReduce) {
  const auto j = nlohmann::json::parse(
      tpipe("simulate -p 4 -m 8 --costs 0.01,0.02 --dp 4 --grad-bytes 1e9 --bandwidth 1.25e10 --latency 5e-6 --json")
          .text);
  const double allreduce = 2.0 * 3 * 5e-6 + 2.0 * 3 / 4 * (1e9 / 4) / 1.25e10;  // 30.03 ms
  EXPECT_DOUBLE_EQ(j["makespan"].get<double>(), 0.33);                          // 11 slots of F + B
  EXPECT_DOUBLE_EQ(j["dp"]["allreduce_s"].get<double>(), allreduce);
  EXPECT_DOUBLE_EQ(j["dp"]["step_s"].get<double>(), 0.33 + allreduce) << "rank 0 ends last, then reduces";
  EXPECT_DOUBLE_EQ(j["dp"]["allreduce_share"].get<double>(), allreduce / (0.33 + allreduce));
  EXPECT_EQ(j["dp"]["ranks"], 16);
  // 16,384 ranks: 64 stages x 256 replicas.
  const auto big = tpipe("simulate -p 64 -m 256 --costs 0.004,0.008 --dp 256 --grad-bytes 2.8e10");
  ASSERT_EQ(big.status, 0) << big.text;
  EXPECT_NE(big.text.find("data parallel: 256 replicas, 16384 ranks; ring all-reduce of 4.375e+08 bytes a stage at "
                          "1.25e+10 bytes/s, 5 us a step: 72.3 ms at most\nstep 3.9 s: pipeline 3.83 s, all-reduce "
                          "not hidden 1.9% of the step (rank 0 ends it)"),
            std::string::npos)
      << big.text;
}

}  // namespace
