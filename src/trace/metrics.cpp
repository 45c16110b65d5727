// Per-step metrics as one JSON line (see metrics.h).
#include "tpipe/trace/metrics.h"

#include <nlohmann/json.hpp>

#include <algorithm>

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
  j["held_bytes_per_stage"] = m.held_bytes;
  if (!m.activation_peak_bytes.empty()) {
    j["activation_peak_bytes"] = *std::max_element(m.activation_peak_bytes.begin(), m.activation_peak_bytes.end());
    j["activation_peak_bytes_per_rank"] = m.activation_peak_bytes;
  }
  if (!m.memory_peak_bytes.empty()) j["memory_peak_bytes_per_rank"] = m.memory_peak_bytes;
  j["grad_norm"] = m.grad_norm;
  if (m.grad_norm_clipped >= 0) j["grad_norm_clipped"] = m.grad_norm_clipped;
  if (m.learning_rate >= 0) j["lr"] = m.learning_rate;
  if (m.flops > 0) j["flops_per_s"] = rate(m.flops);
  if (m.val_loss) j["val_loss"] = *m.val_loss;
  if (m.skipped) j["skipped"] = true;
  return j.dump();
}

}  // namespace tpipe::trace
