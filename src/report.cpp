// Metrics lines, trace and timeline files of a run (see report.h).
#include "tpipe/report.h"

#include <algorithm>
#include <utility>

#include "tpipe/trace/chrome.h"
#include "tpipe/trace/metrics.h"
#include "tpipe/trace/svg.h"
#include "tpipe/util/files.h"

namespace tpipe {

Reporter::Reporter(ReportOptions options) : opts_(std::move(options)) {}

bool Reporter::needs_recording() const {
  return !opts_.trace_path.empty() || !opts_.timeline_path.empty() || !opts_.metrics_path.empty();
}

double Reporter::on_step(const PipelineEngine& engine, const StepResult& r, std::int64_t samples, std::int64_t tokens,
                         std::optional<double> val_loss) {
  const trace::StepTrace& t = engine.last_trace();
  if (t.events.empty()) return -1;  // not rank 0, or not recording
  const double bubble = trace::measured_bubble(t).overall;
  if (!opts_.metrics_path.empty()) {
    trace::StepMetrics m;
    m.step = t.step;
    m.loss = r.loss;
    m.step_seconds = r.step_seconds;
    m.samples = samples;
    m.tokens = tokens;
    m.bubble = bubble;
    m.grad_norm = r.grad_norm;
    m.val_loss = val_loss;
    m.held_bytes.assign(engine.topology().pp(), 0);
    for (const auto& e : t.events) {
      auto& peak = m.held_bytes.at(engine.topology().position_of(e.rank));
      peak = std::max(peak, e.stash_bytes);
    }
    const auto measured = trace::measured_memory(t);
    m.activation_peak_bytes = measured.activation_peak_bytes;
    m.memory_peak_bytes = measured.memory_peak_bytes;
    m.skipped = r.skipped;
    if (opts_.fresh_metrics && !metrics_started_)
      write_file_atomic(opts_.metrics_path, trace::metrics_line(m) + "\n");
    else
      append_line(opts_.metrics_path, trace::metrics_line(m));
    metrics_started_ = true;
  }
  if (!opts_.trace_path.empty() || !opts_.timeline_path.empty()) {
    steps_.push_back(t);
    if (static_cast<int>(steps_.size()) > std::max(opts_.keep_steps, 1)) steps_.erase(steps_.begin());
  }
  return bubble;
}

void Reporter::finish() {
  if (steps_.empty()) return;
  if (!opts_.trace_path.empty()) trace::write_chrome_trace(opts_.trace_path, steps_);
  if (!opts_.timeline_path.empty()) {
    trace::TimelineStyle style;
    style.title = opts_.title.empty() ? "step " + std::to_string(steps_.back().step) + " · measured"
                                      : opts_.title + " · step " + std::to_string(steps_.back().step) + " · measured";
    write_file_atomic(opts_.timeline_path, trace::render_timeline_svg(steps_.back(), style));
  }
}

}  // namespace tpipe
