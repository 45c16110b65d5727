// Per-step metrics as one JSON line (see metrics.h).
#include "tpipe/trace/metrics.h"

#include <nlohmann/json.hpp>

namespace tpipe::trace {

std::string metrics_line(const StepMetrics& m) {
  // ordered_json: a reader scanning the log by eye finds the step and loss first.
  nlohmann::ordered_json j;
  const auto rate = [&](double count) {
    return m.step_seconds > 0 ? count / m.step_seconds : 0.0;
  };
  j["step"] = m.step;
  j["loss"] = m.loss;
  j["step_time_s"] = m.step_seconds;
  j["samples_per_s"] = rate(static_cast<double>(m.samples));
  if (m.tokens > 0) j["tokens_per_s"] = rate(static_cast<double>(m.tokens));
  if (m.bubble >= 0) j["bubble"] = m.bubble;
  j["peak_activation_bytes_per_stage"] = m.peak_activation_bytes;
  j["grad_norm"] = m.grad_norm;
  if (m.val_loss) j["val_loss"] = *m.val_loss;
  if (m.skipped) j["skipped"] = true;
  return j.dump();
}

}  // namespace tpipe::trace
