// Line charts as SVG (see chart.h).
#include "tpipe/report/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tpipe::report {
namespace {

// Ten distinct colours that stay apart for people with common colour blindness.
const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", std::max(0, decimals), v);
  std::string s = buf;
  if (s[0] == '-' && s.find_first_not_of("0.", 1) == std::string::npos) s.erase(0, 1);  // no "-0.0"
  return s;
}

std::string px(double v) { return fixed(v, 1); }

// The smallest of 1, 2, 5 x 10^k that is at least `raw`.
double nice_step(double raw) {
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * decade >= raw * (1 - 1e-12)) return m * decade;
  return 10 * decade;
}

Axis linear_axis(double lo, double hi, int max_ticks) {
  if (hi == lo) {
    const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad, hi += pad;
  }
  double step = nice_step((hi - lo) / std::max(1, max_ticks - 1));
  Axis a;
  for (;; step = nice_step(step * 1.000001)) {
    const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
    if (last - first + 1 > max_ticks) continue;
    a.lo = first * step, a.hi = last * step;
    for (double k = first; k <= last; ++k) a.ticks.push_back(k == 0 ? 0.0 : k * step);
    return a;
  }
}

Axis log_axis(double lo, double hi, int max_ticks) {
  Axis a;
  a.log = true;
  double e_lo = std::floor(std::log10(lo) + 1e-12), e_hi = std::ceil(std::log10(hi) - 1e-12);
  if (e_hi <= e_lo) e_hi = e_lo + 1;
  a.lo = std::pow(10.0, e_lo), a.hi = std::pow(10.0, e_hi);
  const double decades = e_hi - e_lo;
  const double every = std::ceil(decades / std::max(1, max_ticks - 1));
  for (double e = e_lo; e <= e_hi; e += every) {
    const double d = std::pow(10.0, e);
    a.ticks.push_back(d);
    if (decades < 2 && e < e_hi)
      for (double m : {2.0, 5.0}) a.ticks.push_back(m * d);
  }
  return a;
}

// Where v lies along the axis, 0 at lo and 1 at hi.
double fraction(double v, const Axis& a) {
  if (a.log) return (std::log10(v) - std::log10(a.lo)) / (std::log10(a.hi) - std::log10(a.lo));
  return (v - a.lo) / (a.hi - a.lo);
}

bool drawable(double x, double y, bool log_y) { return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0); }

}  // namespace

Axis nice_axis(double lo, double hi, bool log, int max_ticks) {
  max_ticks = std::max(2, max_ticks);
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (log) {
    if (hi <= 0) hi = 1;
    if (lo <= 0) lo = hi / 10;
    return log_axis(lo, hi, max_ticks);
  }
  return linear_axis(lo, hi, max_ticks);
}

std::string tick_label(double v, const Axis& a) {
  if (v == 0) return "0";
  if (a.log && (std::abs(v) < 1e-3 || std::abs(v) >= 1e12)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0e", v);
    return buf;
  }
  // The spacing this tick needs to be told apart from its neighbours.
  double step = std::abs(v);
  if (!a.log && a.ticks.size() > 1) step = std::abs(a.ticks[1] - a.ticks[0]);
  if (a.log) step = std::pow(10.0, std::floor(std::log10(std::abs(v)) + 1e-9));
  const char* unit = "";
  double scale = 1;
  const double big = std::max(std::abs(a.lo), std::abs(a.hi));
  if (big >= 1e9) unit = "G", scale = 1e9;
  else if (big >= 1e6) unit = "M", scale = 1e6;
  else if (big >= 1e4) unit = "k", scale = 1e3;
  if (a.log) {  // each tick in its own unit
    const double m = std::abs(v);
    unit = m >= 1e9 ? "G" : m >= 1e6 ? "M" : m >= 1e3 ? "k" : "";
    scale = m >= 1e9 ? 1e9 : m >= 1e6 ? 1e6 : m >= 1e3 ? 1e3 : 1;
  }
  const int decimals = static_cast<int>(std::max(0.0, -std::floor(std::log10(step / scale) + 1e-9)));
  return fixed(v / scale, decimals) + unit;
}

std::vector<Segment> drawable_segments(const Series& s, bool log_y, int columns, int budget) {
  const std::size_t n = std::min(s.x.size(), s.y.size());
  std::size_t count = 0;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  for (std::size_t i = 0; i < n; ++i)
    if (drawable(s.x[i], s.y[i], log_y)) ++count, x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
  const bool thin = static_cast<int>(count) > std::max(budget, 1) && columns > 0 && x_hi > x_lo;
  auto column = [&](double x) {
    return std::min(columns - 1, static_cast<int>((x - x_lo) / (x_hi - x_lo) * columns));
  };
  std::vector<Segment> out;
  Segment run, group;  // group: the points of the current column, while thinning
  auto flush_group = [&] {
    if (group.empty()) return;
    auto lowest = group.front(), highest = group.front();
    for (const auto& p : group) {
      if (p.second < lowest.second) lowest = p;
      if (p.second > highest.second) highest = p;
    }
    Segment keep{group.front()};
    // The extremes in the order they came, then the last point.
    if (lowest.first <= highest.first) keep.push_back(lowest), keep.push_back(highest);
    else keep.push_back(highest), keep.push_back(lowest);
    keep.push_back(group.back());
    for (const auto& p : keep)
      if (run.empty() || run.back() != p) run.push_back(p);
    group.clear();
  };
  auto end_run = [&] {
    flush_group();
    if (!run.empty()) out.push_back(std::move(run));
    run.clear();
  };
  int col = -1;
  for (std::size_t i = 0; i < n; ++i) {
    if (!drawable(s.x[i], s.y[i], log_y)) {
      end_run();
      continue;
    }
    if (!thin) {
      run.push_back({s.x[i], s.y[i]});
      continue;
    }
    const int c = column(s.x[i]);
    if (c != col) flush_group(), col = c;
    group.push_back({s.x[i], s.y[i]});
  }
  end_run();
  return out;
}

std::string escape_xml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string chart_svg(const Chart& c) {
  const double left = 58, right = 14, bottom = 42;
  // The legend: entries in rows under the title.
  const double legend_row = 16, title_h = 22;
  std::vector<std::pair<double, int>> legend_at;  // x, row
  double lx = left;
  int rows = c.series.empty() ? 0 : 1;
  for (const Series& s : c.series) {
    const double w = 28 + 6.5 * static_cast<double>(s.name.size()) + 14;
    if (lx + w > c.width - right && lx > left) lx = left, ++rows;
    legend_at.push_back({lx, rows - 1});
    lx += w;
  }
  const double top = title_h + rows * legend_row + 8;
  const double pw = c.width - left - right, ph = c.height - top - bottom;

  // The ranges of what is drawable, over every series.
  const int columns = std::max(1, static_cast<int>(pw));
  const int budget = std::max(4, c.max_vertices / std::max<int>(1, static_cast<int>(c.series.size())));
  std::vector<std::vector<Segment>> drawn;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const Series& s : c.series) {
    drawn.push_back(drawable_segments(s, c.log_y, columns, budget));
    for (const Segment& seg : drawn.back())
      for (const auto& [x, y] : seg)
        x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x), y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
  }
  const bool empty = !(x_lo <= x_hi);
  const Axis ax = nice_axis(empty ? 0 : x_lo, empty ? 1 : x_hi, false, 7);
  const Axis ay = nice_axis(empty ? 0 : y_lo, empty ? 1 : y_hi, c.log_y, 6);
  auto X = [&](double x) { return left + fraction(x, ax) * pw; };
  auto Y = [&](double y) { return top + (1 - fraction(y, ay)) * ph; };

  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"" + escape_xml(c.id) +
                  "\" width=\"" + std::to_string(c.width) + "\" height=\"" + std::to_string(c.height) +
                  "\" viewBox=\"0 0 " + std::to_string(c.width) + " " + std::to_string(c.height) +
                  "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o += "<text x=\"" + px(left) + "\" y=\"15\" font-size=\"13\" font-weight=\"bold\">" + escape_xml(c.title) +
       (c.log_y ? " (log scale)" : "") + "</text>\n";
  for (std::size_t i = 0; i < c.series.size(); ++i) {
    const Series& s = c.series[i];
    const std::string color = s.color.empty() ? kPalette[i % 10] : s.color;
    const double x = legend_at[i].first, y = title_h + legend_at[i].second * legend_row + 8;
    o += "<g class=\"legend\"><line x1=\"" + px(x) + "\" y1=\"" + px(y) + "\" x2=\"" + px(x + 22) + "\" y2=\"" +
         px(y) + "\" stroke=\"" + color + "\" stroke-width=\"2\"" + (s.dashed ? " stroke-dasharray=\"5 3\"" : "") +
         "/><text x=\"" + px(x + 27) + "\" y=\"" + px(y + 4) + "\">" + escape_xml(s.name) + "</text></g>\n";
  }
  o += "<rect x=\"" + px(left) + "\" y=\"" + px(top) + "\" width=\"" + px(pw) + "\" height=\"" + px(ph) +
       "\" fill=\"none\" stroke=\"#999\"/>\n";
  for (double t : ax.ticks) {
    o += "<line x1=\"" + px(X(t)) + "\" y1=\"" + px(top) + "\" x2=\"" + px(X(t)) + "\" y2=\"" + px(top + ph) +
         "\" stroke=\"#eee\"/><text x=\"" + px(X(t)) + "\" y=\"" + px(top + ph + 14) + "\" text-anchor=\"middle\">" +
         tick_label(t, ax) + "</text>\n";
  }
  for (double t : ay.ticks) {
    o += "<line x1=\"" + px(left) + "\" y1=\"" + px(Y(t)) + "\" x2=\"" + px(left + pw) + "\" y2=\"" + px(Y(t)) +
         "\" stroke=\"#eee\"/><text x=\"" + px(left - 5) + "\" y=\"" + px(Y(t) + 4) + "\" text-anchor=\"end\">" +
         tick_label(t, ay) + "</text>\n";
  }
  o += "<text x=\"" + px(left + pw / 2) + "\" y=\"" + px(c.height - 8) + "\" text-anchor=\"middle\">" +
       escape_xml(c.x_label) + "</text>\n";
  o += "<text transform=\"translate(13 " + px(top + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       escape_xml(c.y_label) + "</text>\n";
  for (std::size_t i = 0; i < c.series.size(); ++i) {
    const Series& s = c.series[i];
    const std::string color = s.color.empty() ? kPalette[i % 10] : s.color;
    for (const Segment& seg : drawn[i]) {
      if (seg.size() == 1) {
        o += "<circle class=\"point\" data-series=\"" + escape_xml(s.name) + "\" cx=\"" + px(X(seg[0].first)) +
             "\" cy=\"" + px(Y(seg[0].second)) + "\" r=\"2.5\" fill=\"" + color + "\"/>\n";
        continue;
      }
      o += "<path class=\"series\" data-series=\"" + escape_xml(s.name) + "\" fill=\"none\" stroke=\"" + color +
           "\" stroke-width=\"1.5\"" + (s.dashed ? " stroke-dasharray=\"5 3\"" : "") + " d=\"";
      for (std::size_t k = 0; k < seg.size(); ++k)
        o += (k == 0 ? "M" : " L") + px(X(seg[k].first)) + "," + px(Y(seg[k].second));
      o += "\"/>\n";
    }
  }
  if (empty)
    o += "<text x=\"" + px(left + pw / 2) + "\" y=\"" + px(top + ph / 2) + "\" text-anchor=\"middle\" fill=\"#888\">" +
         "no data</text>\n";
  return o + "</svg>\n";
}

}  // namespace tpipe::report
