// Per-step training metrics as JSON lines: one object per step, appended to a file that
// plotting scripts (or `jq`) can read while the run is still going.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tpipe::trace {

struct StepMetrics {
  std::int64_t step = 0;
  double loss = 0;
  double step_seconds = 0;  // wall time of the whole step
  std::int64_t samples = 0;  // samples in the global batch (all replicas)
  std::int64_t tokens = 0;   // 0 when the model has no notion of tokens
  double bubble = -1;        // measured idle share; < 0 when not measured
  std::vector<std::int64_t> held_bytes;  // boundary tensors held at most, per pipeline position
  double grad_norm = 0;      // global norm before clipping
  std::optional<double> val_loss;
  bool skipped = false;      // the step was not applied (a non-finite loss or gradient norm)
  // Measured by the counting allocator, per rank (empty: not measured): the activation peak and
  // the peak of all tensor storage (StepResult::activation_peak_bytes, memory_peak_bytes).
  std::vector<std::int64_t> activation_peak_bytes;
  std::vector<std::int64_t> memory_peak_bytes;
  double grad_norm_clipped = -1;  // after clipping (< 0: no clipping)
  double learning_rate = -1;      // < 0: not told
  double flops = 0;               // model FLOPs of the global batch's step; 0: not told
};

// One compact JSON object without a trailing newline, keys in this order:
//   {"step","loss","step_time_s","samples_per_s","tokens_per_s","bubble","held_bytes_per_stage",
//    "activation_peak_bytes","activation_peak_bytes_per_rank","memory_peak_bytes_per_rank",
//    "grad_norm","grad_norm_clipped","lr","flops_per_s","val_loss","skipped"}; "skipped" only when
// true, grad_norm_clipped, lr and flops_per_s only when told, the measured ones only when
// measured ("activation_peak_bytes" is the largest rank's), and a loss or norm that is not finite
// is null.
// tokens_per_s only when tokens > 0, bubble only when >= 0, val_loss only when set; rates are 0
// when step_seconds is not positive. Doubles print as nlohmann::json does (shortest form that
// reads back exactly, e.g. 2.5, 128.0); NaN and infinities print as null.
std::string metrics_line(const StepMetrics& m);

}  // namespace tpipe::trace
