// Recording: a p-stage m-micro-batch GPipe step gives exactly p*m forward and p*m backward events
// with their ranks, every message one flow start and one end, on a clock where each receive ends
// after its send started; the Reporter writes parseable files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "fidelity_model.h"
#include "ranks.h"
#include "tpipe/report.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/trace/chrome.h"

namespace tpipe::testing {
namespace {

constexpr int kStages = 3, kMicro = 4;

std::vector<trace::StepTrace> record(const std::string& schedule, int ranks, int steps,
                                     const ReportOptions& report_options = {}) {
  std::vector<trace::StepTrace> traces;
  expect_ranks_ok(ranks, [&](Communicator& comm) {
    EngineOptions o;
    o.schedule = schedule;
    o.microbatches = kMicro;
    o.record = true;
    o.input_chunking = fidelity_input_chunking();
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
    Reporter report(report_options);
    for (int step = 0; step < steps; ++step) {
      const auto r = e.train_batch(e.is_first_stage() ? fidelity_inputs(step, 8) : Payload{},
                                   e.is_last_stage() ? fidelity_targets(step, 8) : Payload{});
      StepFacts facts;
      facts.samples = 8;
      if (step == 0) facts.val_loss = 1.5;  // an evaluation: the report is written here too
      report.on_step(e, r, facts);
      if (comm.rank() == 0) traces.push_back(e.last_trace());
      else EXPECT_TRUE(e.last_trace().events.empty());
    }
    report.finish(e, "the sample");
  });
  return traces;
}

std::vector<trace::StepTrace> record_gpipe(int steps, const ReportOptions& report_options = {}) {
  return record("gpipe", kStages, steps, report_options);
}

TEST(Trace, GPipeStepHasEveryForwardAndBackwardOnItsRank) {
  const auto traces = record_gpipe(2);
  ASSERT_EQ(traces.size(), 2u);
  const trace::StepTrace& t = traces[1];
  EXPECT_EQ(t.step, 2);
  ASSERT_EQ(t.ranks.size(), static_cast<std::size_t>(kStages));
  std::map<std::pair<int, Op>, int> count;
  for (const auto& e : t.events) {
    if (is_compute(e.action.op)) {
      ++count[{e.rank, e.action.op}];
      EXPECT_EQ(t.ranks[e.rank].stages, std::vector<int>{e.action.stage});
    }
    EXPECT_LE(e.start_us, e.end_us);
  }
  for (int r = 0; r < kStages; ++r) {
    EXPECT_EQ((count[{r, Op::Forward}]), kMicro) << r;
    EXPECT_EQ((count[{r, Op::Backward}]), kMicro) << r;
  }
  // Ranks' clocks are aligned to rank 0's within half a sync round trip, which a loaded machine
  // (tests running side by side) stretches from microseconds to milliseconds: each trace says
  // by how much. Steps last far longer.
  double error_us = 0;
  for (const auto& r : traces[1].ranks) {
    EXPECT_GE(r.clock_error_us, 0.0);
    error_us += r.clock_error_us;
  }
  EXPECT_EQ(traces[1].ranks[0].clock_error_us, 0.0) << "rank 0's clock is the reference";
  EXPECT_GT(traces[1].ranks[1].clock_error_us, 0.0) << "a rank that synced knows its round trip";
  EXPECT_GT(traces[1].start_us(), traces[0].end_us() - 1000.0 - error_us) << "steps follow one another on one clock";
}

// ZB-V on 2 ranks: rank 0 holds stages 0 and 3, rank 1 stages 1 and 2; each stage runs F, B and
// W of every micro-batch there, and only the hand-offs between ranks are messages (stage 1 to 2
// on rank 1 is not).
TEST(Trace, ZbVStepRunsEachStageOnItsRankWithMessagesOnlyBetweenRanks) {
  const auto traces = record("zb-v", 2, 1);
  const trace::StepTrace& t = traces.at(0);
  ASSERT_EQ(t.ranks.size(), 2u);
  EXPECT_EQ(t.ranks[0].stages, (std::vector<int>{0, 3}));
  EXPECT_EQ(t.ranks[1].stages, (std::vector<int>{1, 2}));
  std::map<std::pair<int, Op>, int> count;
  int sends = 0;
  for (const auto& e : t.events) {
    if (is_compute(e.action.op)) {
      ++count[{e.action.stage, e.action.op}];
      EXPECT_EQ(e.rank, e.action.stage == 0 || e.action.stage == 3 ? 0 : 1) << to_string(e.action);
    }
    if (e.action.op == Op::SendAct || e.action.op == Op::SendGrad) {
      ++sends;
      EXPECT_NE(e.action.stage == 1 && e.action.op == Op::SendAct, true) << "stage 1 hands stage 2 its output";
      EXPECT_NE(e.action.stage == 2 && e.action.op == Op::SendGrad, true) << "and stage 2 hands back its gradient";
    }
  }
  for (int st = 0; st < 4; ++st)
    for (Op op : {Op::Forward, Op::Backward, Op::Weight}) EXPECT_EQ((count[{st, op}]), kMicro) << st << to_string(op);
  EXPECT_EQ(sends, 4 * kMicro);  // 0->1 and 2->3 forward, 3->2 and 1->0 backward
}

TEST(Trace, EveryMessageIsOneFlowAndReceivesEndAfterTheirSends) {
  const auto traces = record_gpipe(1);
  const trace::StepTrace& t = traces.at(0);
  std::map<std::tuple<int, Op, int>, const trace::Event*> by_action;
  int sends = 0;
  for (const auto& e : t.events) {
    by_action[{e.action.stage, e.action.op, e.action.mb}] = &e;
    if (e.action.op == Op::SendAct || e.action.op == Op::SendGrad) ++sends;
  }
  EXPECT_EQ(sends, 2 * (kStages - 1) * kMicro);
  for (const auto& e : t.events) {
    if (e.action.op != Op::SendAct && e.action.op != Op::SendGrad) continue;
    const Action recv = matching_comm(e.action);
    auto it = by_action.find({recv.stage, recv.op, recv.mb});
    ASSERT_NE(it, by_action.end()) << to_string(e.action);
    EXPECT_EQ(it->second->peer, e.rank);
    EXPECT_EQ(e.peer, it->second->rank);
    EXPECT_GT(e.bytes, 0);
    EXPECT_EQ(e.bytes, it->second->bytes);
    // Clocks are aligned to a millisecond on one machine, even a loaded one (see above).
    EXPECT_GE(it->second->end_us + 1000.0, e.start_us) << to_string(e.action);
  }
  const nlohmann::json doc = trace::chrome_trace(traces);
  std::map<long long, int> starts, ends;
  int forwards = 0, backwards = 0;
  for (const auto& ev : doc["traceEvents"]) {
    if (ev["ph"] == "s") ++starts[ev["id"].get<long long>()];
    if (ev["ph"] == "f") ++ends[ev["id"].get<long long>()];
    if (ev["ph"] == "X" && ev["cat"] == "compute") {
      const std::string name = ev["name"];
      (name.find('F') != std::string::npos ? forwards : backwards)++;
    }
  }
  EXPECT_EQ(forwards, kStages * kMicro);
  EXPECT_EQ(backwards, kStages * kMicro);
  EXPECT_EQ(static_cast<int>(starts.size()), sends);
  EXPECT_EQ(starts.size(), ends.size());
  for (auto& [id, n] : starts) {
    EXPECT_EQ(n, 1);
    EXPECT_EQ(ends[id], 1) << id;
  }
}

TEST(Trace, ReporterWritesMetricsTraceAndTimeline) {
  const auto dir = std::filesystem::temp_directory_path() / ("tpipe_trace_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ReportOptions ro{(dir / "t.json").string(), (dir / "t.svg").string(), (dir / "m.jsonl").string(), "test", 20};
  record_gpipe(3, ro);
  std::ifstream metrics(dir / "m.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"], lines + 1);
    EXPECT_EQ(j["held_bytes_per_stage"].size(), static_cast<std::size_t>(kStages));
    EXPECT_GT(j["bubble"].get<double>(), 0.0);
    EXPECT_LT(j["bubble"].get<double>(), 1.0);
  }
  EXPECT_EQ(lines, 3);
  std::ifstream trace_file(dir / "t.json");
  EXPECT_NO_THROW(nlohmann::json::parse(trace_file));
  std::ifstream svg(dir / "t.svg");
  const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("test · step 3 · measured"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Trace, ReporterWritesTheRunReport) {
  const auto dir = std::filesystem::temp_directory_path() / ("tpipe_report_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ReportOptions ro{"", (dir / "timeline.svg").string(), (dir / "metrics.jsonl").string(), "test", 20};
  ro.report_dir = dir.string();
  ro.config_json = R"({"lr": 0.5})";
  ro.machine_json = R"({"GEMM of a rank": "7 GFLOP/s"})";
  record_gpipe(2, ro);
  std::ifstream page_file(dir / "report.html");
  const std::string page((std::istreambuf_iterator<char>(page_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("id=\"chart-loss\""), std::string::npos);
  EXPECT_NE(page.find("alt=\"measured timeline\""), std::string::npos);
  EXPECT_NE(page.find("alt=\"planned timeline\""), std::string::npos);
  EXPECT_NE(page.find("<pre>the sample</pre>"), std::string::npos);
  EXPECT_NE(page.find("steps 1 to 2"), std::string::npos);
  std::ifstream info_file(dir / "run.json");
  const auto info = nlohmann::json::parse(info_file);
  EXPECT_EQ(info["layout"]["pp"], kStages);
  EXPECT_EQ(info["layout"]["schedule"], "gpipe");
  EXPECT_EQ(info["config"]["lr"], 0.5);
  EXPECT_EQ(info["machine"]["GEMM of a rank"], "7 GFLOP/s");  // the program's, beside what the Reporter reads
  EXPECT_GE(info["machine"]["cores of rank 0"].get<int>(), 1);
  EXPECT_GT(info["planned"]["bubble"].get<double>(), 0.0);
  EXPECT_TRUE(std::filesystem::exists(dir / "planned.svg"));
  std::filesystem::remove_all(dir);
}

// A new run (fresh_metrics) leaves an earlier run's metrics alone until it has a line of its own,
// then replaces them; a resumed one appends.
TEST(Report, FreshMetricsReplaceTheOldFileOnlyWithTheFirstNewLine) {
  const auto dir = std::filesystem::temp_directory_path() / ("tpipe_fresh_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "m.jsonl").string();
  auto lines = [&] {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  std::ofstream(path) << "old 1\nold 2\n";
  ReportOptions ro;
  ro.metrics_path = path;
  ro.fresh_metrics = true;
  record("gpipe", kStages, 0, ro);  // a run that fails before its first step
  EXPECT_EQ(lines(), (std::vector<std::string>{"old 1", "old 2"}));
  record("gpipe", kStages, 2, ro);
  ASSERT_EQ(lines().size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines()[0])["step"], 1);
  ro.fresh_metrics = false;
  record("gpipe", kStages, 1, ro);
  EXPECT_EQ(lines().size(), 3u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tpipe::testing
