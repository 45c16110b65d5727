// What a run shows, as a library feature every program gets the same way: per-step metrics as
// JSON lines (--metrics), a Chrome / Perfetto trace of the recorded steps (--trace) and an SVG
// timeline of the last one (--timeline). Rank 0 writes; other ranks only take part in recording.
//
//   tpipe::Reporter report({trace_path, timeline_path, metrics_path});
//   options.record = report.needs_recording();
//   ... auto r = engine.train_batch(x, y); report.on_step(engine, r, batch_size);
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
};

class Reporter {
 public:
  explicit Reporter(ReportOptions options);

  // Traces, timelines and the measured bubble / per-stage memory of the metrics need every
  // rank's events: set EngineOptions::record to this.
  bool needs_recording() const;

  // After each training step, on every rank; `samples` and `tokens` count the global batch.
  // Returns the measured bubble of the step on rank 0 (-1 elsewhere or when not recording).
  double on_step(const PipelineEngine& engine, const StepResult& result, std::int64_t samples,
                 std::int64_t tokens = 0, std::optional<double> val_loss = std::nullopt);

  // Rank 0: writes the trace and the timeline of the last recorded step (atomically).
  void finish();

  const std::vector<trace::StepTrace>& recorded() const { return steps_; }

 private:
  ReportOptions opts_;
  std::vector<trace::StepTrace> steps_;
  bool metrics_started_ = false;
};

}  // namespace tpipe
