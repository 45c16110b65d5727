// The end of a training step as actions, DeepSpeed style, so that the schedule stays the one
// description of a step. Appended to every rank after its last backward (and its send), so the
// reductions start while the rest of the pipeline drains:
//   ... 1B7 1SEND_B7 1REDUCE_TIED 1REDUCE_DP 1STEP
// REDUCE_TIED sums the gradients of weights tied across stages, REDUCE_DP averages gradients
// over the replicas of the stage (both start asynchronously); STEP waits for them, clips and
// steps the optimizer.
#pragma once

#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

// `tied_stages`: groups of two or more stages sharing a weight (stored in the schedule);
// `data_parallel`: whether there are replicas to reduce over.
Schedule append_step_end(const Schedule& s, const std::vector<std::vector<int>>& tied_stages, bool data_parallel);

}  // namespace tpipe
