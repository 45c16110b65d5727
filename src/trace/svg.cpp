// The step timeline as SVG (see svg.h). Plain text output, no library: the picture must be
// readable in a browser, convertible by rsvg-convert, and byte-identical for identical input so
// that golden files and diffs work. Layout:
//
//   title
//   rank 0 · stage 0 · replica 0 | [0][1][2][3]          [ 0 ][ 1 ][ 2 ][ 3 ]
//   rank 1 · stage 1 · replica 0 |    [0][1][2][3]    [ 0 ][ 1 ][ 2 ][ 3 ]
//                                +----+----+----+----+----+----+----+----+
//                                0    1    2    3    4    5    6    7    8
//                                             time (ms)
//   ■ forward ■ backward ■ waiting for data ■ reduction ■ end of step (sync, optimizer) | message sent
//   bubble: rank 0 27.3% · rank 1 27.3% · overall 27.3%
//
// Idle time is left blank on purpose: the bubble is what the reader looks for.
#include "tpipe/trace/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace tpipe::trace {
namespace {

constexpr double kMargin = 12;
constexpr double kRightMargin = 30;  // room for half of the last tick label
constexpr double kFont = 12;
constexpr double kGlyph = 0.55;  // mean sans-serif advance per em; only for layout estimates
constexpr const char* kDot = "\u00b7";
constexpr const char* kForward = "#4e79a7";
constexpr const char* kBackward = "#f28e2b";
constexpr const char* kWeight = "#59a14f";
constexpr const char* kLaterChunk = " fill-opacity=\"0.6\"";  // compute of a rank's later stages
constexpr const char* kRecv = "#9d9d9d";
constexpr const char* kSend = "#333333";
constexpr const char* kReduce = "#b07aa1";
constexpr const char* kStep = "#76b7b2";

// Fixed precision keeps the output deterministic and free of "1e-07"-style numbers.
std::string fixed(double x, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  std::string s = buf;
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);  // no "-0.0"
  return s;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

double text_width(const std::string& s, double font_px) {
  std::size_t glyphs = 0;
  for (unsigned char c : s) glyphs += (c & 0xC0) != 0x80;  // UTF-8: count lead bytes only
  return static_cast<double>(glyphs) * font_px * kGlyph;
}

std::string percent(double x) { return fixed(100 * x) + "%"; }

std::string text(double x, double y, const std::string& s, double font_px, const char* extra = "") {
  return "<text x=\"" + fixed(x) + "\" y=\"" + fixed(y) + "\" font-size=\"" + fixed(font_px) + "\"" + extra + ">" +
         escape(s) + "</text>\n";
}

std::string rect(double x, double y, double w, double h, const char* fill, const char* extra = "") {
  return "<rect x=\"" + fixed(x) + "\" y=\"" + fixed(y) + "\" width=\"" + fixed(w) + "\" height=\"" + fixed(h) +
         "\" fill=\"" + fill + "\"" + extra + "/>";
}

// The step between ticks: 1, 2 or 5 x 10^k, the smallest giving at most 10 ticks. The candidate
// before it gave more than 10 and steps grow by at most 2.5x, so there are at least 5.
double tick_step(double span) {
  for (int k = static_cast<int>(std::floor(std::log10(span))) - 2;; ++k)
    for (double m : {1.0, 2.0, 5.0}) {
      const double step = m * std::pow(10.0, k);
      if (std::floor(span / step + 1e-9) + 1 <= 10) return step;
    }
}

const char* fill_of(Op op) {
  switch (op) {
    case Op::Forward: return kForward;
    case Op::Backward: return kBackward;
    case Op::Weight: return kWeight;
    case Op::ReduceTied:
    case Op::ReduceDp: return kReduce;
    case Op::OptimizerStep: return kStep;
    case Op::SendAct:
    case Op::SendGrad: return kSend;
    default: return kRecv;
  }
}

const char* class_of(Op op) {
  switch (op) {
    case Op::Forward: return "F";
    case Op::Backward: return "B";
    case Op::Weight: return "W";
    case Op::SendAct:
    case Op::SendGrad: return "send";
    case Op::RecvAct:
    case Op::RecvGrad: return "recv";
    case Op::ReduceTied:
    case Op::ReduceDp: return "reduce";
    default: return "step";
  }
}

std::string hover(const Event& e) {
  std::string s = to_string(e.action) + " " + kDot + " " + fixed((e.end_us - e.start_us) / 1000.0, 3) + " ms";
  const bool send = e.action.op == Op::SendAct || e.action.op == Op::SendGrad;
  if (is_comm(e.action.op) && e.peer >= 0) s += std::string(" ") + kDot + (send ? " to" : " from") + " rank " + std::to_string(e.peer);
  if (e.bytes > 0) s += std::string(" ") + kDot + " " + fixed(static_cast<double>(e.bytes) / 1024.0, 1) + " KiB";
  return s;
}

std::string rank_label(const RankInfo& r) {
  return "rank " + std::to_string(r.rank) + " " + kDot + " " + stages_label(r) + " " + kDot +
         " replica " + std::to_string(r.replica);
}

// Greedy line filling, so a wide legend or many ranks wrap instead of running off the picture.
// Returns the indices of the items on each line.
std::vector<std::vector<std::size_t>> wrap(const std::vector<double>& widths, double max_width) {
  std::vector<std::vector<std::size_t>> lines;
  double used = 0;
  for (std::size_t i = 0; i < widths.size(); ++i) {
    if (lines.empty() || used + widths[i] > max_width) {
      lines.emplace_back();
      used = 0;
    }
    lines.back().push_back(i);
    used += widths[i];
  }
  return lines;
}

}  // namespace

std::string render_timeline_svg(const StepTrace& t, const TimelineStyle& style) {
  const double W = std::max(style.width_px, 200.0);
  const double row_h = std::max(style.row_height_px, 8.0);
  const double pad = std::min(2.0, row_h / 10);  // inside a row, so neighbouring rows stay apart

  double label_w = 0;
  for (const auto& r : t.ranks) label_w = std::max(label_w, text_width(rank_label(r), kFont));
  const double x0 = std::min(kMargin + label_w + 10, W / 2);
  const double x1 = W - kRightMargin;
  const double top = style.title.empty() ? kMargin : kMargin + 30;

  const double t0 = t.start_us();
  const double span_us = t.end_us() - t0 > 0 ? t.end_us() - t0 : 1.0;
  const auto x_of = [&](double us) { return x0 + (us - t0) / span_us * (x1 - x0); };
  std::string body;
  if (!style.title.empty()) body += text(kMargin, kMargin + 18, style.title, 16, " font-weight=\"bold\"");
  for (std::size_t i = 0; i < t.ranks.size(); ++i) {
    const double y = top + static_cast<double>(i) * row_h;
    body += rect(x0, y + pad / 2, x1 - x0, row_h - pad, "#f3f3f3") + "\n";
    body += text(kMargin, y + row_h / 2 + kFont * 0.35, rank_label(t.ranks[i]), kFont);
  }

  bool any_weight = false, any_chunk = false;
  const auto draw = [&](const Event& e) {
    const Op op = e.action.op;
    const bool send = op == Op::SendAct || op == Op::SendGrad;
    if (e.rank < 0 || e.rank >= static_cast<int>(t.ranks.size()) || (e.end_us <= e.start_us && !send)) return;
    any_weight |= op == Op::Weight;
    // A rank holding several stages (virtual stages): its later stages' boxes are lighter.
    const auto& mine = t.ranks[e.rank].stages;
    const bool later_chunk = is_compute(op) && !mine.empty() && e.action.stage != mine.front();
    any_chunk |= later_chunk;
    const double y = top + e.rank * row_h + pad, h = row_h - 2 * pad;
    double x = x_of(e.start_us);
    const double w = x_of(e.end_us) - x;
    double by = y, bh = h, bw = w;
    const char* stroke = " stroke=\"#ffffff\" stroke-width=\"0.8\"";
    if (send) {  // centred on the moment of sending, usually the boundary of two boxes
      bw = std::max(w, 1.5);
      x -= (bw - w) / 2;
      bh = h * 0.35;
      stroke = "";
    } else if (op == Op::RecvAct || op == Op::RecvGrad) {
      by = y + h * 0.78;
      bh = h * 0.18;
      stroke = "";
    } else if (is_step_end(op)) {
      by = y + h * 0.2;
      bh = h * 0.6;
    }
    const std::string extra = std::string(stroke) + (later_chunk ? kLaterChunk : "");
    body += std::string("<g class=\"") + class_of(op) + "\"><title>" + escape(hover(e)) + "</title>" +
            rect(x, by, bw, bh, fill_of(op), extra.c_str());
    const std::string mb = std::to_string(e.action.mb);
    // Shrink long numbers a little rather than drop them, so a row does not switch from numbered
    // to bare boxes at micro-batch 10 (digits are ~0.64 em wide).
    const double font = std::min({11.0, h * 0.45, (w - 4) / (0.64 * static_cast<double>(mb.size()))});
    if (is_compute(op) && w >= 12 && font >= 7)
      body += "<text x=\"" + fixed(x + w / 2) + "\" y=\"" + fixed(y + h / 2 + font * 0.35) + "\" font-size=\"" +
              fixed(font) + "\" fill=\"#ffffff\" text-anchor=\"middle\">" + mb + "</text>";
    body += "</g>\n";
  };
  // Sends last: a tick on the boundary of two boxes would otherwise vanish under the second.
  for (const Event& e : t.events)
    if (e.action.op != Op::SendAct && e.action.op != Op::SendGrad) draw(e);
  for (const Event& e : t.events)
    if (e.action.op == Op::SendAct || e.action.op == Op::SendGrad) draw(e);

  // Time axis, labelled from the start of the step.
  const double axis_y = top + static_cast<double>(t.ranks.size()) * row_h + 4;
  const bool in_ms = span_us >= 1000;
  const double unit = in_ms ? 1000.0 : 1.0, span = span_us / unit, step = tick_step(span);
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  body += "<line x1=\"" + fixed(x0) + "\" y1=\"" + fixed(axis_y) + "\" x2=\"" + fixed(x1) + "\" y2=\"" + fixed(axis_y) +
          "\" stroke=\"#555555\"/>\n";
  for (int i = 0; i * step <= span * (1 + 1e-9); ++i) {
    const double x = x_of(t0 + i * step * unit);
    body += "<line x1=\"" + fixed(x) + "\" y1=\"" + fixed(axis_y) + "\" x2=\"" + fixed(x) + "\" y2=\"" +
            fixed(axis_y + 5) + "\" stroke=\"#555555\"/>\n";
    body += text(x, axis_y + 18, fixed(i * step, decimals), 11, " class=\"tick\" text-anchor=\"middle\"");
  }
  body += text((x0 + x1) / 2, axis_y + 36, in_ms ? "time (ms)" : "time (\u00b5s)", kFont, " text-anchor=\"middle\"");

  // Legend: swatches, then the measured bubble.
  struct Entry {
    const char* fill;
    std::string label;
    const char* extra = "";
  };
  std::vector<Entry> entries = {{kForward, "forward"}, {kBackward, "backward"}};
  if (any_weight) entries.push_back({kWeight, "weight"});
  if (any_chunk) entries.push_back({kForward, "lighter: a rank's later stage", kLaterChunk});
  for (Entry e : {Entry{kRecv, "waiting for data"}, Entry{kReduce, "reduction"}, Entry{kStep, "end of step (sync, optimizer)"},
                  Entry{kSend, "message sent"}})
    entries.push_back(e);
  std::vector<double> widths;
  for (const auto& e : entries) widths.push_back(18 + text_width(e.label, kFont) + 16);
  double y = axis_y + 62;
  for (const auto& line : wrap(widths, W - 2 * kMargin)) {
    double x = kMargin;
    for (std::size_t i : line) {
      const bool tick = entries[i].fill == kSend;  // drawn as in the plot: a thin mark
      body += rect(tick ? x + 5 : x, y - 10, tick ? 2 : 12, 12, entries[i].fill, entries[i].extra) + "\n";
      body += text(x + 18, y, entries[i].label, kFont);
      x += widths[i];
    }
    y += 20;
  }
  const Bubble b = measured_bubble(t);
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < b.per_rank.size(); ++i)
    parts.push_back("rank " + std::to_string(i) + " " + percent(b.per_rank[i]));
  parts.push_back("overall " + percent(b.overall));
  parts.front() = "bubble: " + parts.front();
  const std::string sep = std::string(" ") + kDot + " ";
  widths.clear();
  for (const auto& p : parts) widths.push_back(text_width(p + sep, kFont));
  for (const auto& line : wrap(widths, W - 2 * kMargin)) {
    std::string s;
    for (std::size_t i : line) s += (s.empty() ? "" : sep) + parts[i];
    body += text(kMargin, y, s, kFont, " class=\"bubble\"");
    y += 18;
  }

  const double height = std::ceil(y - 18 + kMargin);  // y is one line past the last baseline
  const std::string w_text = fixed(W, 0), h_text = fixed(height, 0);
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + w_text +
         "\" height=\"" + h_text + "\" viewBox=\"0 0 " + w_text + " " + h_text +
         "\" font-family=\"sans-serif\" fill=\"#222222\">\n" + rect(0, 0, W, height, "#ffffff") + "\n" + body +
         "</svg>\n";
}

}  // namespace tpipe::trace
