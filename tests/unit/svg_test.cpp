// The SVG timeline: one box per compute action, row labels, the measured bubble in the legend,
// escaping, determinism, and that a real renderer (rsvg-convert) accepts the output.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>

#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/record.h"
#include "tpipe/trace/svg.h"

namespace tpipe::trace {
namespace {

int count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (auto pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
  return n;
}

std::string pct(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

StepTrace gpipe_plan() {
  const Schedule s = make_schedule("gpipe", 4, 8);
  return from_simulation(s, simulate(s));
}

Event ev(int rank, const char* action, double start, double end, int peer = -1) {
  Event e;
  e.rank = rank;
  e.action = parse_action(action);
  e.start_us = start;
  e.end_us = end;
  e.peer = peer;
  return e;
}

// Two ranks, one micro-batch, with the communication and end-of-step events a real step records.
StepTrace hand_made() {
  StepTrace t;
  t.ranks = {{0, {0}, 0}, {1, {1}, 0}};
  t.events = {ev(0, "0F0", 0, 1000),          ev(0, "0SEND_F0", 1000, 1010, 1), ev(0, "0RECV_B0", 1010, 3000, 1),
              ev(0, "0B0", 3000, 5000),       ev(0, "0REDUCE_DP", 5000, 5100),  ev(0, "0STEP", 5100, 5600),
              ev(1, "1RECV_F0", 0, 1010, 0),  ev(1, "1F0", 1010, 2000),         ev(1, "1B0", 2000, 3000),
              ev(1, "1SEND_B0", 3000, 3000, 0), ev(1, "1REDUCE_TIED", 3000, 3000), ev(1, "1REDUCE_DP", 3000, 3200),
              ev(1, "1STEP", 3200, 5600)};
  return t;
}

TEST(Svg, OneBoxPerForwardAndBackward) {
  const std::string svg = render_timeline_svg(gpipe_plan());
  EXPECT_EQ(count(svg, "class=\"F\""), 32);
  EXPECT_EQ(count(svg, "class=\"B\""), 32);
  EXPECT_EQ(count(svg, "class=\"W\""), 0);
  EXPECT_EQ(count(svg, "class=\"send\""), 48);  // 3 x 8 activations + 3 x 8 gradients, zero-length ticks
  EXPECT_EQ(count(svg, "class=\"recv\""), 0);   // the plan never waits inside a receive
  EXPECT_NE(svg.find("<title>0F0 \u00b7 1.000 ms</title>"), std::string::npos);
  EXPECT_NE(svg.find("<title>3B7 \u00b7 2.000 ms</title>"), std::string::npos);
  EXPECT_EQ(svg.find("weight"), std::string::npos);
}

TEST(Svg, RowLabelsAxisAndLegend) {
  const std::string svg = render_timeline_svg(gpipe_plan());
  for (int r = 0; r < 4; ++r) {
    const std::string label = "rank " + std::to_string(r) + " \u00b7 stage " + std::to_string(r) + " \u00b7 replica 0";
    EXPECT_EQ(count(svg, ">" + label + "</text>"), 1) << label;
  }
  EXPECT_NE(svg.find(">time (ms)</text>"), std::string::npos);
  const int ticks = count(svg, "class=\"tick\"");  // span 33 ms: step 5, ticks 0..30
  EXPECT_EQ(ticks, 7);
  EXPECT_NE(svg.find(">30</text>"), std::string::npos);
  for (const char* entry : {">forward<", ">backward<", ">waiting for data<", ">reduction<", ">end of step (sync, optimizer)<"})
    EXPECT_NE(svg.find(entry), std::string::npos) << entry;
}

// ZB-V on 2 ranks: rows name both stages of a rank, and the later stage's boxes (stages 3 and 2)
// are the lighter ones: 3 actions (F, B, W) x 4 micro-batches x 2 ranks.
TEST(Svg, RanksWithSeveralStagesShowTheirChunks) {
  const Schedule s = make_schedule("zb-v", 2, 4);
  const std::string svg = render_timeline_svg(from_simulation(s, simulate(s, Costs{1, 1, 1})));
  EXPECT_EQ(count(svg, ">rank 0 \u00b7 stages 0,3 \u00b7 replica 0</text>"), 1);
  EXPECT_EQ(count(svg, ">rank 1 \u00b7 stages 1,2 \u00b7 replica 0</text>"), 1);
  EXPECT_EQ(count(svg, "fill-opacity=\"0.6\"/>"), 3 * 4 * 2 + 1);  // and the legend's swatch
  EXPECT_EQ(count(svg, "<title>3F0 "), 1);
  EXPECT_NE(svg.find(">lighter: a rank's later stage<"), std::string::npos);
  EXPECT_EQ(render_timeline_svg(gpipe_plan()).find("fill-opacity"), std::string::npos);
}

TEST(Svg, BubbleLineIsTheMeasuredBubble) {
  const StepTrace t = gpipe_plan();
  const Bubble b = measured_bubble(t);
  std::string line = "bubble: ";
  for (int r = 0; r < 4; ++r) line += "rank " + std::to_string(r) + " " + pct(b.per_rank[r]) + " \u00b7 ";
  line += "overall " + pct(b.overall);
  const std::string svg = render_timeline_svg(t);
  EXPECT_NE(svg.find(">" + line + "</text>"), std::string::npos) << svg;
  // GPipe, p=4, m=8, F=1, B=2: (p-1)/(m+p-1) = 3/11.
  EXPECT_NE(svg.find("overall 27.3%</text>"), std::string::npos);
  EXPECT_NE(svg.find("bubble: rank 0 27.3% \u00b7 rank 1 27.3%"), std::string::npos);
}

TEST(Svg, CommunicationAndStepEnd) {
  const std::string svg = render_timeline_svg(hand_made());
  EXPECT_EQ(count(svg, "class=\"F\""), 2);
  EXPECT_EQ(count(svg, "class=\"B\""), 2);
  EXPECT_EQ(count(svg, "class=\"recv\""), 2);
  EXPECT_EQ(count(svg, "class=\"send\""), 2);    // the zero-length one too
  EXPECT_EQ(count(svg, "class=\"reduce\""), 2);  // the zero-length REDUCE_TIED is skipped
  EXPECT_EQ(count(svg, "class=\"step\""), 2);
  EXPECT_NE(svg.find("<title>1RECV_F0 \u00b7 1.010 ms \u00b7 from rank 0</title>"), std::string::npos);
  EXPECT_NE(svg.find("<title>0SEND_F0 \u00b7 0.010 ms \u00b7 to rank 1</title>"), std::string::npos);
  EXPECT_NE(svg.find("<title>1STEP \u00b7 2.400 ms</title>"), std::string::npos);
  EXPECT_EQ(svg.find("1REDUCE_TIED"), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#9d9d9d\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#b07aa1\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#76b7b2\""), std::string::npos);
  // Span 5.6 ms: ticks every 1 ms, 0..5. Compute: rank 0 3 ms, rank 1 1.99 ms of 5.6.
  EXPECT_EQ(count(svg, "class=\"tick\""), 6);
  EXPECT_NE(svg.find("bubble: rank 0 46.4% \u00b7 rank 1 64.5% \u00b7 overall 55.4%</text>"), std::string::npos);
}

TEST(Svg, ShortSpansUseMicroseconds) {
  StepTrace t;
  t.ranks = {{0, {0}, 0}};
  t.events = {ev(0, "0F0", 100, 250), ev(0, "0B0", 250, 400)};
  const std::string svg = render_timeline_svg(t);
  EXPECT_NE(svg.find(">time (\u00b5s)</text>"), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"tick\""), 7);  // span 300 us: step 50, ticks 0..300
  EXPECT_NE(svg.find(">300</text>"), std::string::npos);
}

TEST(Svg, TitleIsEscaped) {
  TimelineStyle style;
  style.title = "a <&> \"b\"";
  const std::string svg = render_timeline_svg(gpipe_plan(), style);
  EXPECT_NE(svg.find(">a &lt;&amp;&gt; &quot;b&quot;</text>"), std::string::npos);
  EXPECT_EQ(svg.find("<&>"), std::string::npos);
  EXPECT_EQ(render_timeline_svg(gpipe_plan()).find("font-weight=\"bold\""), std::string::npos);  // no title, none drawn
}

TEST(Svg, Deterministic) {
  TimelineStyle style;
  style.title = "gpipe";
  EXPECT_EQ(render_timeline_svg(gpipe_plan(), style), render_timeline_svg(gpipe_plan(), style));
  EXPECT_EQ(render_timeline_svg(hand_made()), render_timeline_svg(hand_made()));
}

TEST(Svg, HeaderIsSelfContained) {
  const std::string svg = render_timeline_svg(gpipe_plan());
  EXPECT_EQ(svg.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\"", 0), 0u);
  EXPECT_NE(svg.find("viewBox=\"0 0 1200 "), std::string::npos);
  EXPECT_NE(svg.find("font-family=\"sans-serif\""), std::string::npos);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
}

TEST(Svg, RsvgConvertRendersIt) {
  ASSERT_EQ(std::system("command -v rsvg-convert >/dev/null 2>&1"), 0)
      << "rsvg-convert not found: install it with `apt-get install librsvg2-bin` (see the install script)";
  const std::string base = ::testing::TempDir() + "tpipe_svg_test_" + std::to_string(::getpid());
  const std::string svg_path = base + ".svg", png_path = base + ".png";
  for (const StepTrace& t : {gpipe_plan(), hand_made()}) {
    TimelineStyle style;
    style.title = "gpipe \u00b7 4 stages \u00b7 <&>";
    {
      std::ofstream out(svg_path, std::ios::binary);
      out << render_timeline_svg(t, style);
      ASSERT_TRUE(out.good());
    }
    std::remove(png_path.c_str());
    ASSERT_EQ(std::system(("rsvg-convert -o '" + png_path + "' '" + svg_path + "'").c_str()), 0) << svg_path;
    std::ifstream in(png_path, std::ios::binary);
    std::string head(8, '\0');
    in.read(&head[0], 8);
    EXPECT_EQ(head, std::string("\x89PNG\r\n\x1a\n", 8));
  }
  std::remove(svg_path.c_str());
  std::remove(png_path.c_str());
}

}  // namespace
}  // namespace tpipe::trace
