// The run report's charts and page (report/chart.h, report/page.h): axes, ticks, thinning,
// breaks at missing values, and what the page holds.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>

#include "tpipe/error.h"
#include "tpipe/report/chart.h"
#include "tpipe/report/page.h"

namespace tpipe::report {
namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(ReportAxis, LinearTicksAreRoundAndCoverTheData) {
  const Axis a = nice_axis(0.13, 9.7);
  EXPECT_EQ(a.lo, 0);
  EXPECT_EQ(a.hi, 10);
  EXPECT_EQ(a.ticks, (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const Axis b = nice_axis(2.31, 2.47);
  EXPECT_NEAR(b.lo, 2.30, 1e-12);
  EXPECT_NEAR(b.hi, 2.50, 1e-12);
  ASSERT_EQ(b.ticks.size(), 5u);
  EXPECT_NEAR(b.ticks[1] - b.ticks[0], 0.05, 1e-12);
  EXPECT_EQ(tick_label(b.ticks[1], b), "2.35");
  const Axis c = nice_axis(-3, 7);  // steps of 2 would need 7 ticks: 5 then
  EXPECT_EQ(c.ticks, (std::vector<double>{-5, 0, 5, 10}));
  EXPECT_EQ(tick_label(0, c), "0");
}

TEST(ReportAxis, OnePointAndAConstantSeriesGetARangeAroundTheValue) {
  const Axis one = nice_axis(5, 5);
  EXPECT_LT(one.lo, 5);
  EXPECT_GT(one.hi, 5);
  const Axis zero = nice_axis(0, 0);
  EXPECT_EQ(zero.lo, -1);
  EXPECT_EQ(zero.hi, 1);
  const Axis log_one = nice_axis(3, 3, true);
  EXPECT_EQ(log_one.lo, 1);
  EXPECT_EQ(log_one.hi, 10);
  const Axis bad = nice_axis(kNaN, std::numeric_limits<double>::infinity());
  EXPECT_EQ(bad.lo, 0);
  EXPECT_EQ(bad.hi, 1);
}

TEST(ReportAxis, LogTicksArePowersOfTen) {
  const Axis a = nice_axis(0.02, 350, true);
  EXPECT_TRUE(a.log);
  EXPECT_DOUBLE_EQ(a.lo, 0.01);
  EXPECT_DOUBLE_EQ(a.hi, 1000);
  ASSERT_EQ(a.ticks.size(), 6u);
  EXPECT_EQ(tick_label(a.ticks[0], a), "0.01");
  EXPECT_EQ(tick_label(a.ticks[5], a), "1k");
  const Axis narrow = nice_axis(1.5, 4, true);  // less than two decades: 2 and 5 between
  EXPECT_EQ(narrow.ticks, (std::vector<double>{1, 2, 5, 10}));
  const Axis tiny = nice_axis(1e-7, 1e-5, true);
  EXPECT_EQ(tick_label(tiny.ticks.front(), tiny), "1e-07");
}

TEST(ReportAxis, LargeValuesGetAUnit) {
  const Axis a = nice_axis(0, 48000);
  EXPECT_EQ(tick_label(a.ticks.back(), a), "50k");
  const Axis b = nice_axis(0, 2.5e9);
  EXPECT_EQ(tick_label(b.ticks[1], b), "0.5G");
}

TEST(ReportChart, MissingValuesBreakTheLineAndNeverReachTheSvg) {
  Series s{"train", {1, 2, 3, 4, 5, 6}, {2.0, 1.9, kNaN, 1.7, 1.6, std::numeric_limits<double>::infinity()}};
  const auto segs = drawable_segments(s, false, 500, 1000);
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].size(), 2u);
  EXPECT_EQ(segs[1].size(), 2u);
  Chart c{"chart-loss", "Loss", "step", "loss"};
  c.series.push_back(s);
  const std::string svg = chart_svg(c);
  EXPECT_EQ(count(svg, "class=\"series\""), 2);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(ReportChart, ALonePointIsADotAndNoDataIsSaid) {
  Chart c{"chart-one", "One", "step", "v"};
  c.series.push_back({"only", {7}, {0.5}});
  const std::string one = chart_svg(c);
  EXPECT_EQ(count(one, "<circle class=\"point\""), 1);
  EXPECT_EQ(count(one, "class=\"series\""), 0);
  Chart empty{"chart-empty", "Nothing", "step", "v"};
  empty.series.push_back({"none", {1, 2}, {kNaN, kNaN}});
  EXPECT_NE(chart_svg(empty).find("no data"), std::string::npos);
}

TEST(ReportChart, ALogAxisLeavesOutValuesThatAreNotPositive) {
  Series s{"lr", {1, 2, 3, 4}, {1e-3, 0, 1e-4, 2e-4}};
  const auto segs = drawable_segments(s, true, 100, 100);
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].size(), 1u);
  EXPECT_EQ(segs[1].size(), 2u);
}

TEST(ReportChart, AHundredThousandPointsDrawWithBoundedVerticesAndKeepTheirSpikes) {
  Series s{"loss", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    s.x.push_back(i);
    s.y.push_back(i == 54321 ? 50.0 : 2.0 + std::sin(i * 0.01));
  }
  Chart c{"chart-big", "Big", "step", "loss"};
  c.series.push_back(s);
  const std::string svg = chart_svg(c);
  const std::regex vertex("[ML][0-9.]+,[0-9.]+");
  const auto n = std::distance(std::sregex_iterator(svg.begin(), svg.end(), vertex), std::sregex_iterator());
  EXPECT_LE(n, c.max_vertices);
  EXPECT_GT(n, 500);  // still a curve
  // The spike at 50 is the top of the value axis and a vertex sits on it.
  const auto segs = drawable_segments(s, false, 488, c.max_vertices);
  double top = 0;
  for (const auto& seg : segs)
    for (const auto& p : seg) top = std::max(top, p.second);
  EXPECT_EQ(top, 50.0);
}

TEST(ReportChart, EveryPieceOfTextIsEscaped) {
  Chart c{"chart-x", "a<b & \"c\"", "step", "v"};
  c.series.push_back({"<script>", {1, 2}, {1, 2}});
  const std::string svg = chart_svg(c);
  EXPECT_EQ(svg.find("<script>"), std::string::npos);
  EXPECT_NE(svg.find("&lt;script&gt;"), std::string::npos);
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot;"), std::string::npos);
}

// A run directory with two metrics lines, one of them a skipped step, and a torn last line.
std::string sample_run(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "metrics.jsonl")
      << R"({"step":1,"loss":4.2,"step_time_s":0.5,"samples_per_s":64,"tokens_per_s":4096,"bubble":0.2,"grad_norm":3.5,"grad_norm_clipped":1.0,"lr":0.001,"val_loss":4.1})"
      << "\n"
      << R"({"step":2,"loss":null,"step_time_s":0.5,"samples_per_s":64,"tokens_per_s":4096,"bubble":0.18,"grad_norm":null,"lr":0.001,"skipped":true})"
      << "\n"
      << R"({"step":3,"loss":3.9,"step_time_s":0.5,"samples_per_s":64,"tokens_per_s":4096,"bubble":0.17,"grad_norm":2.0,"grad_norm_clipped":1.0,"lr":0.0009,"val_loss":4.0,"activation_peak_bytes_per_rank":[1048576,2097152]})"
      << "\n{\"step\":4,\"lo";
  std::ofstream(dir / "run.json") << R"({"title":"GPT <test>","layout":{"pp":2,"dp":1},"sample":"And God said"})";
  std::ofstream(dir / "timeline.svg") << "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>";
  return dir.string();
}

TEST(ReportPage, HoldsTheChartsTimelineFactsAndSampleAndFetchesNothing) {
  const std::string dir = sample_run("tpipe_report_page_test");
  const RunFiles run = read_run(run_paths(dir), "run");
  ASSERT_EQ(run.steps.size(), 3u);  // the torn line is left out
  const std::string page = report_html({run});
  for (const char* id : {"chart-loss", "chart-loss-log", "chart-lr", "chart-grad-norm", "chart-throughput",
                         "chart-bubble", "chart-activations"})
    EXPECT_NE(page.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  EXPECT_EQ(page.find("id=\"chart-gflops\""), std::string::npos);  // no flops in these metrics
  // Validation losses of steps 1 and 3 are one line (step 2 has none); the skipped step 2 breaks
  // the training loss into two dots.
  EXPECT_NE(page.find("<path class=\"series\" data-series=\"validation\""), std::string::npos);
  EXPECT_EQ(count(page.substr(0, page.find("id=\"chart-loss-log\"")), "<circle class=\"point\" data-series=\"train\""), 2);
  EXPECT_NE(page.find("data:image/svg+xml;base64,PHN2Zy"), std::string::npos);  // "<svg" in base64
  EXPECT_NE(page.find("GPT &lt;test&gt;"), std::string::npos);
  EXPECT_NE(page.find("<pre>And God said</pre>"), std::string::npos);
  EXPECT_NE(page.find("default-src 'none'"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("nan"), std::string::npos);
  EXPECT_NE(page.find("steps 1 to 3"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ReportPage, TwoRunsOverlayTheirCurves) {
  const std::string a = sample_run("tpipe_report_a"), b = sample_run("tpipe_report_b");
  const std::string page = report_html({read_run(run_paths(a), "pp1"), read_run(run_paths(b), "pp2")});
  EXPECT_NE(page.find("data-series=\"pp1: train\""), std::string::npos);
  EXPECT_NE(page.find("data-series=\"pp2: train\""), std::string::npos);
  EXPECT_NE(page.find("Timeline of pp2"), std::string::npos);
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

TEST(ReportPage, ADirectoryWithoutARunIsAClearError) {
  const auto dir = std::filesystem::temp_directory_path() / "tpipe_report_nothing";
  std::filesystem::create_directories(dir);
  try {
    read_run(run_paths(dir.string()), dir.string());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tpipe::report
