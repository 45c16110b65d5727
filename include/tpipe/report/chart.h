// Line charts as inline SVG, for the run report (page.h): axes with round ticks, a legend, a
// linear or logarithmic value axis, and a bounded number of vertices however long the run.
// Pure functions of their inputs; std only.
//
//   Chart c{"loss", "Loss", "step", "nats"};
//   c.series.push_back({"train", steps, losses});
//   std::string svg = chart_svg(c);
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace tpipe::report {

// One axis: its range and where its ticks are. Linear ticks are 1, 2 or 5 x 10^k apart and the
// range is widened to whole ticks; logarithmic ticks are powers of ten (with 2 and 5 between
// them when the range spans less than two decades). A single value gets a range around it.
struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  bool log = false;
};
Axis nice_axis(double lo, double hi, bool log = false, int max_ticks = 6);

// A tick's label: short, as many decimals as the tick spacing needs, SI-style k / M / G for
// large values ("1.5k", "20M") and 10^k for tiny logarithmic ones ("1e-05").
std::string tick_label(double value, const Axis& axis);

struct Series {
  std::string name;
  std::vector<double> x, y;  // equal lengths; points whose x or y is not finite (or y <= 0 on a
                             // logarithmic axis) are not drawn and break the line
  std::string color;         // CSS colour; empty: the palette's next one
  bool dashed = false;
};

struct Chart {
  std::string id;     // the <svg>'s id, e.g. "chart-loss"
  std::string title;  // drawn above the plot
  std::string x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;
  int width = 560, height = 280;  // pixels
  int max_vertices = 4000;        // per chart, over all its series
};

// The pieces of a series that are drawn, in data coordinates: runs of consecutive drawable
// points. A series of more than `budget` drawable points keeps, per column of `columns` across
// the x range, its first, lowest, highest and last point, so every spike stays visible.
using Segment = std::vector<std::pair<double, double>>;
std::vector<Segment> drawable_segments(const Series& s, bool log_y, int columns, int budget);

// The chart as one <svg> element (no XML declaration): frame, grid, ticks and labels, a path per
// segment (a lone point is drawn as a dot), a legend naming each series, and a note when nothing
// is drawable ("no data").
std::string chart_svg(const Chart& chart);

// Text escaped for HTML and SVG (& < > " ').
std::string escape_xml(const std::string& text);

}  // namespace tpipe::report
