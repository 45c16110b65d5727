// The timeline of one step as a self-contained SVG picture — the figure of the GPipe paper, but
// measured (or planned, via from_simulation): one row per rank, a box per forward / backward,
// idle time left blank so the bubble is visible, and the measured bubble in the legend.
#pragma once

#include <string>

#include "tpipe/trace/record.h"

namespace tpipe::trace {

struct TimelineStyle {
  std::string title;          // drawn at the top when non-empty
  double width_px = 1200;     // whole picture; the plot gets what the row labels leave
  double row_height_px = 34;  // one rank
};

// Deterministic: the same trace and style give the same bytes.
std::string render_timeline_svg(const StepTrace& t, const TimelineStyle& style = {});

}  // namespace tpipe::trace
