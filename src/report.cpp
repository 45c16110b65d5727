// Metrics lines, trace, timeline and report files of a run (see report.h).
#include "tpipe/report.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "tpipe/error.h"
#include "tpipe/machine/facts.h"
#include "tpipe/report/page.h"
#include "tpipe/report/planned.h"
#include "tpipe/trace/chrome.h"
#include "tpipe/trace/metrics.h"
#include "tpipe/trace/svg.h"
#include "tpipe/util/files.h"

namespace tpipe {
namespace {

std::string measured_title(const ReportOptions& o, std::int64_t step) {
  return (o.title.empty() ? "" : o.title + " · ") + "step " + std::to_string(step) + " · measured";
}

nlohmann::json object_or_empty(const std::string& text) {
  auto j = nlohmann::json::parse(text.empty() ? "{}" : text, nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

nlohmann::json layout_of(const PipelineEngine& e) {
  const EngineOptions& o = e.options();
  return {{"pp", e.topology().pp()},
          {"dp", e.topology().dp()},
          {"stages", e.num_stages()},
          {"schedule", e.schedule().name},
          {"micro-batches", e.schedule().num_microbatches},
          {"partition", o.partition},
          {"layers per stage", to_string(e.partition())},
          {"checkpoint", o.checkpoint},
          {"clip grad norm", o.clip_grad_norm ? nlohmann::json(*o.clip_grad_norm) : nlohmann::json("off")}};
}

nlohmann::json machine_of(const std::string& measured) {
  const MachineFacts f = read_machine_facts();
  nlohmann::json j = object_or_empty(measured);
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) j["host"] = host;
  j["cores of rank 0"] = f.cores;
  j["instruction sets"] = to_string(cpu_isa_level(f.cpu_flags));
  j["BLAS"] = f.openblas ? "OpenBLAS, " + f.blas_corename + " kernel" : "not OpenBLAS";
  j["intra-op threads of rank 0"] = at::get_num_threads();
  return j;
}

}  // namespace

Reporter::Reporter(ReportOptions options) : opts_(std::move(options)) {}

bool Reporter::needs_recording() const {
  return !opts_.trace_path.empty() || !opts_.timeline_path.empty() || !opts_.metrics_path.empty() ||
         !opts_.report_dir.empty();
}

double Reporter::on_step(const PipelineEngine& engine, const StepResult& r, const StepFacts& facts) {
  const trace::StepTrace& t = engine.last_trace();
  if (t.events.empty()) return -1;  // not rank 0, or not recording
  const double bubble = trace::measured_bubble(t).overall;
  if (!opts_.metrics_path.empty()) {
    trace::StepMetrics m;
    m.step = t.step;
    m.loss = r.loss;
    m.step_seconds = r.step_seconds;
    m.samples = facts.samples;
    m.tokens = facts.tokens;
    m.bubble = bubble;
    m.grad_norm = r.grad_norm;
    if (const auto& clip = engine.options().clip_grad_norm) m.grad_norm_clipped = std::min(r.grad_norm, *clip);
    m.learning_rate = facts.learning_rate;
    m.flops = facts.flops;
    m.val_loss = facts.val_loss;
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
  if (!opts_.trace_path.empty() || !opts_.timeline_path.empty() || !opts_.report_dir.empty()) {
    steps_.push_back(t);
    if (static_cast<int>(steps_.size()) > std::max(opts_.keep_steps, 1)) steps_.erase(steps_.begin());
  }
  if (facts.val_loss) write_report(engine);
  return bubble;
}

void Reporter::finish(const PipelineEngine& engine, const std::string& sample) {
  if (steps_.empty()) return;
  if (!opts_.trace_path.empty()) trace::write_chrome_trace(opts_.trace_path, steps_);
  sample_ = sample;
  write_report(engine);
}

void Reporter::write_report(const PipelineEngine& engine) {
  if (steps_.empty()) return;
  const trace::StepTrace& last = steps_.back();
  if (!opts_.timeline_path.empty()) {
    trace::TimelineStyle style;
    style.title = measured_title(opts_, last.step);
    write_file_atomic(opts_.timeline_path, trace::render_timeline_svg(last, style));
  }
  if (opts_.report_dir.empty()) return;
  const std::filesystem::path dir(opts_.report_dir);
  const report::RunPaths paths{opts_.metrics_path, (dir / "run.json").string(), opts_.timeline_path,
                               (dir / "planned.svg").string()};
  nlohmann::json info{{"title", opts_.title.empty() ? dir.filename().string() : opts_.title},
                      {"layout", layout_of(engine)},
                      {"machine", machine_of(opts_.machine_json)},
                      {"config", object_or_empty(opts_.config_json)}};
  // The plan is a picture: a step it cannot plan (a stage with no measured action) loses only it.
  try {
    const report::PlannedStep planned = report::plan_like(engine.schedule(), last);
    trace::TimelineStyle style;
    style.title = (opts_.title.empty() ? "" : opts_.title + " · ") + "planned with step " +
                  std::to_string(last.step) + "'s costs";
    write_file_atomic(paths.planned_svg, trace::render_timeline_svg(planned.trace, style));
    info["planned"] = {{"bubble", planned.bubble}, {"step", last.step}, {"what", planned.what}};
  } catch (const ScheduleError& e) {
    std::error_code ec;
    std::filesystem::remove(paths.planned_svg, ec);
    info["planned"] = {{"what", std::string("not planned: ") + e.what()}};
  }
  if (!sample_.empty()) info["sample"] = sample_;
  write_file_atomic(paths.run_info, info.dump(1));
  report::write_report(paths, dir.filename().string(), (dir / "report.html").string());
}

}  // namespace tpipe
