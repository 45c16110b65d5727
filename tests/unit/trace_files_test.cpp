// Trace and metrics files: Chrome trace JSON from a simulated GPipe step, atomic writes, line
// appends, the metrics line format.
#include <gtest/gtest.h>

#include "temp_dir.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tpipe/error.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/chrome.h"
#include "tpipe/trace/metrics.h"
#include "tpipe/util/files.h"

namespace tpipe {
namespace {

using nlohmann::json;

constexpr int kStages = 3;
constexpr int kMicro = 4;


std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  return names;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool has_temp_file(const std::string& dir) {
  for (const auto& n : list_dir(dir))
    if (n.find(".tmp") != std::string::npos) return true;
  return false;
}

struct Fixture {
  Schedule schedule = make_schedule("gpipe", kStages, kMicro);
  std::vector<trace::StepTrace> steps;

  Fixture() {
    trace::StepTrace first = trace::from_simulation(schedule, simulate(schedule));
    for (auto& e : first.events) e.stash_bytes = 100 + e.rank;
    trace::StepTrace second = first;
    second.step = 1;
    const double shift = first.end_us() + 500;
    for (auto& e : second.events) {
      e.start_us += shift;
      e.end_us += shift;
    }
    steps = {first, second};
  }

  int sends_per_step() const {
    int n = 0;
    for (const auto& rank : schedule.ranks)
      for (const auto& a : rank) n += a.op == Op::SendAct || a.op == Op::SendGrad;
    return n;
  }
};

std::vector<json> with_phase(const json& doc, const std::string& ph) {
  std::vector<json> out;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == ph) out.push_back(e);
  return out;
}

TEST(ChromeTrace, OneSlicePerComputeActionOnItsRank) {
  Fixture f;
  const json doc = trace::chrome_trace(f.steps);
  EXPECT_EQ(doc["displayTimeUnit"], "ms");
  const std::regex fwd(R"((\d)F\d+)"), bwd(R"((\d)B\d+)");
  for (int step = 0; step < 2; ++step) {
    int forwards = 0, backwards = 0;
    for (const auto& e : with_phase(doc, "X")) {
      if (e["args"]["step"] != step) continue;
      const std::string name = e["name"];
      std::smatch m;
      const bool is_f = std::regex_match(name, m, fwd);
      const bool is_b = !is_f && std::regex_match(name, m, bwd);
      if (!is_f && !is_b) continue;
      (is_f ? forwards : backwards)++;
      EXPECT_EQ(e["cat"], "compute");
      EXPECT_EQ(e["pid"], std::stoi(m[1]));  // one stage per rank
      EXPECT_EQ(e["tid"], 0);
      EXPECT_EQ(e["args"]["stage"], std::stoi(m[1]));
      EXPECT_FALSE(e["args"].contains("peer"));
    }
    EXPECT_EQ(forwards, kStages * kMicro) << "step " << step;
    EXPECT_EQ(backwards, kStages * kMicro) << "step " << step;
  }
  int comm = 0;
  for (const auto& e : with_phase(doc, "X"))
    if (e["cat"] == "comm") {
      ++comm;
      EXPECT_TRUE(e["args"].contains("peer") && e["args"].contains("bytes")) << e.dump();
    }
  EXPECT_EQ(comm, 2 * 2 * f.sends_per_step());  // a send and a receive per message
}

TEST(ChromeTrace, EveryFlowStartHasOneEndOnTheReceiver) {
  Fixture f;
  const json doc = trace::chrome_trace(f.steps);
  std::map<std::int64_t, json> starts;
  std::map<std::int64_t, std::vector<json>> ends;
  for (const auto& e : with_phase(doc, "s")) {
    EXPECT_TRUE(starts.emplace(e["id"].get<std::int64_t>(), e).second) << "duplicate id";
  }
  for (const auto& e : with_phase(doc, "f")) ends[e["id"].get<std::int64_t>()].push_back(e);
  EXPECT_EQ(static_cast<int>(starts.size()), 2 * f.sends_per_step());
  EXPECT_EQ(ends.size(), starts.size());
  for (const auto& [id, s] : starts) {
    ASSERT_EQ(ends[id].size(), 1u) << "flow " << id;
    const json& end = ends[id][0];
    EXPECT_EQ(end["bp"], "e");
    EXPECT_EQ(end["name"], s["name"]);
    EXPECT_EQ(s["cat"], "flow");
    // GPipe places stage s on rank s: activations go one rank down, gradients one rank up.
    const int step_dir = s["name"] == "activation" ? 1 : -1;
    EXPECT_EQ(end["pid"].get<int>(), s["pid"].get<int>() + step_dir);
  }
}

TEST(ChromeTrace, SendWithoutReceiveGetsNoFlow) {
  Fixture f;
  auto& events = f.steps[0].events;
  const auto it = std::find_if(events.begin(), events.end(), [](const trace::Event& e) {
    return e.action.op == Op::RecvAct;
  });
  ASSERT_NE(it, events.end());
  events.erase(it);
  const json doc = trace::chrome_trace(f.steps);
  EXPECT_EQ(static_cast<int>(with_phase(doc, "s").size()), 2 * f.sends_per_step() - 1);
  EXPECT_EQ(with_phase(doc, "f").size(), with_phase(doc, "s").size());
}

TEST(ChromeTrace, MetadataAndCounters) {
  Fixture f;
  const json doc = trace::chrome_trace(f.steps);
  std::map<int, std::string> names;
  std::map<int, int> sort_index;
  for (const auto& e : with_phase(doc, "M")) {
    if (e["name"] == "process_name") names[e["pid"]] = e["args"]["name"];
    if (e["name"] == "process_sort_index") sort_index[e["pid"]] = e["args"]["sort_index"];
  }
  EXPECT_EQ(names, (std::map<int, std::string>{{0, "rank 0 \u00b7 stage 0 \u00b7 replica 0"},
                                               {1, "rank 1 \u00b7 stage 1 \u00b7 replica 0"},
                                               {2, "rank 2 \u00b7 stage 2 \u00b7 replica 0"}}));
  EXPECT_EQ(sort_index, (std::map<int, int>{{0, 0}, {1, 1}, {2, 2}}));

  const auto counters = with_phase(doc, "C");
  EXPECT_EQ(static_cast<int>(counters.size()), 2 * 2 * kStages * kMicro);
  for (const auto& c : counters) {
    EXPECT_EQ(c["name"], "stashed activations");
    EXPECT_EQ(c["args"]["bytes"], 100 + c["pid"].get<int>());
  }
}

TEST(ChromeTrace, SortedByPidThenTime) {
  Fixture f;
  const json doc = trace::chrome_trace(f.steps);
  int pid = -1;
  double ts = 0;
  bool seen_timed = false;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "M") {
      EXPECT_FALSE(seen_timed) << "metadata after timed events";
      continue;
    }
    seen_timed = true;
    const int p = e["pid"];
    const double t = e["ts"];
    EXPECT_TRUE(p > pid || (p == pid && t >= ts)) << e.dump();
    pid = p;
    ts = t;
  }
}

TEST(ChromeTrace, WrittenFileParsesBackToTheDocument) {
  Fixture f;
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string& dir = tmp.path;
  const std::string path = dir + "/out/trace.json";
  trace::write_chrome_trace(path, f.steps);
  const json back = json::parse(read_all(path));
  EXPECT_EQ(back, trace::chrome_trace(f.steps));
  EXPECT_FALSE(has_temp_file(dir + "/out"));
}

TEST(Files, AtomicWriteReplacesContentAndLeavesNoTemp) {
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string& dir = tmp.path;
  const std::string path = dir + "/a/b/file.txt";
  write_file_atomic(path, "first\n");
  EXPECT_EQ(read_all(path), "first\n");
  write_file_atomic(path, std::string("second\0x", 8));
  EXPECT_EQ(read_all(path), std::string("second\0x", 8));
  EXPECT_EQ(list_dir(dir + "/a/b"), std::vector<std::string>{"file.txt"});
}

TEST(Files, AtomicWriteUnderARegularFileThrows) {
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string& dir = tmp.path;
  write_file_atomic(dir + "/plain", "x");
  const std::string bad = dir + "/plain/sub/file.txt";
  try {
    write_file_atomic(bad, "y");
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write " + bad + ": "), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(write_file_atomic(dir + "/plain/file.txt", "y"), ConfigError);
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"plain"});
  EXPECT_EQ(read_all(dir + "/plain"), "x");
}

TEST(Files, AtomicWriteOverADirectoryThrowsAndCleansUp) {
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string& dir = tmp.path;
  ASSERT_EQ(::mkdir((dir + "/target").c_str(), 0755), 0);
  EXPECT_THROW(write_file_atomic(dir + "/target", "y"), ConfigError);
  EXPECT_FALSE(has_temp_file(dir));
}

TEST(Files, AppendLine) {
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string& dir = tmp.path;
  const std::string path = dir + "/logs/metrics.jsonl";
  append_line(path, "{\"step\":0}");
  append_line(path, "{\"step\":1}");
  EXPECT_EQ(read_all(path), "{\"step\":0}\n{\"step\":1}\n");
  EXPECT_THROW(append_line(path + "/x", "z"), ConfigError);
}

TEST(Files, ConcurrentAppendsStayWhole) {
  const tpipe::testing::TempDir tmp("tpipe_trace");
  const std::string path = tmp.path + "/lines.txt";
  const int threads = 4, lines = 200;
  const std::string body(300, 'x');
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int i = 0; i < lines; ++i) append_line(path, std::to_string(t) + body);
    });
  for (auto& th : pool) th.join();
  std::istringstream in(read_all(path));
  std::string line;
  int count = 0;
  while (std::getline(in, line)) {
    ++count;
    ASSERT_EQ(line.size(), body.size() + 1);
    EXPECT_EQ(line.substr(1), body);
  }
  EXPECT_EQ(count, threads * lines);
}

TEST(Metrics, FullLine) {
  const trace::StepMetrics m{7, 2.5, 0.25, 32, 4096, 0.125, {1024, 2048}, 1.5, 2.75};
  EXPECT_EQ(trace::metrics_line(m),
            R"({"step":7,"loss":2.5,"step_time_s":0.25,"samples_per_s":128.0,)"
            R"("tokens_per_s":16384.0,"bubble":0.125,)"
            R"("held_bytes_per_stage":[1024,2048],"grad_norm":1.5,"val_loss":2.75})");
}

TEST(Metrics, ClippingLearningRateAndFlops) {
  trace::StepMetrics m;
  m.step = 3, m.loss = 1.25, m.step_seconds = 0.5, m.samples = 8, m.grad_norm = 4;
  m.grad_norm_clipped = 1, m.learning_rate = 0.0625, m.flops = 3e9;
  EXPECT_EQ(trace::metrics_line(m),
            R"({"step":3,"loss":1.25,"step_time_s":0.5,"samples_per_s":16.0,"held_bytes_per_stage":[],)"
            R"("grad_norm":4.0,"grad_norm_clipped":1.0,"lr":0.0625,"flops_per_s":6000000000.0})");
}

TEST(Metrics, OptionalFieldsOmitted) {
  trace::StepMetrics m;
  m.step = 0;
  m.loss = 0.1;
  m.step_seconds = 2;
  m.samples = 3;
  EXPECT_EQ(trace::metrics_line(m),
            R"({"step":0,"loss":0.1,"step_time_s":2.0,"samples_per_s":1.5,)"
            R"("held_bytes_per_stage":[],"grad_norm":0.0})");
}

}  // namespace
}  // namespace tpipe
