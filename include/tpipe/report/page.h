// The run report: one self-contained HTML page (no script, no network: inline SVG charts, the
// timelines as data: images, a Content-Security-Policy that forbids every fetch) built from the
// files a run leaves in its directory. The Reporter (report.h) rewrites it at every evaluation and
// at the end; `tpipe report DIR [DIR2]` rebuilds it, or overlays two runs. Std only.
//
// The files, by default names in the run directory:
//   metrics.jsonl   one JSON object per step (trace/metrics.h): the curves
//   run.json        {"title", "config": {...}, "layout": {...}, "machine": {...}, "sample": "...",
//                    "planned": {"bubble", "step", "what"}}: what the run was; every key optional
//   timeline.svg    the measured timeline of the latest recorded step
//   planned.svg     the simulator's timeline of the same schedule with that step's costs
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tpipe::report {

struct RunPaths {
  std::string metrics, run_info, measured_svg, planned_svg;
};
// The default names in `dir`.
RunPaths run_paths(const std::string& dir);

struct RunFiles {
  std::string label;                   // how the page names the run (its directory's name)
  std::vector<nlohmann::json> steps;   // metrics lines in order; a resumed run's are already one run
  nlohmann::json info = nlohmann::json::object();  // run.json
  std::string measured_svg, planned_svg;            // empty: not written
};

// Reads what exists of the run's files; a metrics line that is not JSON (a run killed while
// writing it) is skipped. Throws ConfigError naming the directory when it has neither metrics nor
// run.json.
RunFiles read_run(const RunPaths& paths, const std::string& label);

// The page for one run, or the curves of several overlaid (then each run's timelines and facts
// follow one after the other).
std::string report_html(const std::vector<RunFiles>& runs);

// Reads the run's files and writes the page to `out`, atomically.
void write_report(const RunPaths& paths, const std::string& label, const std::string& out);

}  // namespace tpipe::report
