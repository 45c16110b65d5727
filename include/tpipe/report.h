// What a run shows, as a library feature every program gets the same way: per-step metrics as
// JSON lines (--metrics), a Chrome / Perfetto trace of the recorded steps (--trace), an SVG
// timeline of the last one (--timeline), and the run report, report.html (report/page.h): the
// curves, the measured and planned timelines side by side, the layout, the machine and the
// program's configuration, rewritten at every evaluation and at the end. Rank 0 writes; other
// ranks only take part in recording.
//
//   tpipe::Reporter report({trace_path, timeline_path, metrics_path});
//   options.record = report.needs_recording();
//   ... auto r = engine.train_batch(x, y); report.on_step(engine, r, {batch_size});
//   report.finish();
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tpipe/engine.h"
#include "tpipe/trace/record.h"

namespace tpipe {

struct ReportOptions {
  std::string trace_path;     // Chrome trace JSON; empty: none
  std::string timeline_path;  // SVG; empty: none
  std::string metrics_path;   // JSON lines, one per step; empty: none
  std::string title;          // of the timeline
  int keep_steps = 20;        // the last steps kept for the trace
  bool fresh_metrics = false;  // the first line replaces an existing metrics file (atomically);
                               // otherwise lines are appended to it (a resumed run)
  std::string report_dir;      // report.html, run.json and planned.svg go here; empty: no report
  std::string config_json;     // the program's configuration, a JSON object shown in the report
  std::string machine_json;    // what the program measured of the machine (JSON object), shown too
};

// What the program knows of a step that the engine does not.
struct StepFacts {
  std::int64_t samples = 0;  // in the global batch
  std::int64_t tokens = 0;   // in the global batch; 0 when the model has no tokens
  std::optional<double> val_loss;
  double learning_rate = -1;  // < 0: not told
  double flops = 0;           // model FLOPs of the global batch's forward and backward; 0: not told
};

class Reporter {
 public:
  explicit Reporter(ReportOptions options);

  // Traces, timelines and the measured bubble / per-stage memory of the metrics need every
  // rank's events: set EngineOptions::record to this.
  bool needs_recording() const;

  // After each training step, on every rank. Returns the measured bubble of the step on rank 0
  // (-1 elsewhere or when not recording). A step with a validation loss rewrites the report.
  double on_step(const PipelineEngine& engine, const StepResult& result, const StepFacts& facts);

  // Rank 0: writes the trace and the timeline of the last recorded step, and the report with
  // `sample` (text the model wrote, if any), each atomically.
  void finish(const PipelineEngine& engine, const std::string& sample = "");

  const std::vector<trace::StepTrace>& recorded() const { return steps_; }

 private:
  void write_report(const PipelineEngine& engine);

  ReportOptions opts_;
  std::vector<trace::StepTrace> steps_;
  bool metrics_started_ = false;
  std::string sample_;
};

}  // namespace tpipe
