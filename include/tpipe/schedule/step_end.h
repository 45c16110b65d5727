// The end of a training step as actions, DeepSpeed style, so that the schedule stays the one
// description of a step. Appended to every rank after its last backward (and its send), so the
// reductions start while the rest of the pipeline drains:
//   ... 1B7 1SEND_B7 1REDUCE_TIED 1REDUCE_DP 1STEP
// REDUCE_TIED sums the gradients of weights tied across stages, REDUCE_DP averages gradients
// over the replicas of the stage (both start asynchronously); STEP waits for them, clips and
// steps the optimizer.
//
// The end of the step is rank-level work: it happens once per RANK, whatever the number of
// stages the rank holds, and is named by the rank's lowest stage. ZB-V, p = 2, rank 0 holds
// stages 0 and 3:
//   rank 0 | ... 0W3 0REDUCE_TIED 0REDUCE_DP 0STEP      (not 3REDUCE_TIED, 3STEP)
// The rules, enforced by the validator:
//   - an end-of-step action comes after every B and W of every stage of its rank;
//   - REDUCE_TIED is on a rank iff one of its stages is in a tied group whose stages lie on two
//     or more ranks (copies of a weight that all live on one rank are one tensor's gradients
//     summed locally, so there is nothing to reduce between processes);
//   - on such a rank STEP needs the REDUCE_TIED, and every end-of-step action precedes STEP;
//   - an end-of-step action named by a stage that is not its rank's lowest is an error.
// In simulation a STEP waits for the REDUCE_TIED of every other rank it shares a cross-rank tie
// group with (it is one collective).
#pragma once

#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

// `tied_stages`: groups of two or more stages sharing a weight (stored in the schedule);
// `data_parallel`: whether there are replicas to reduce over.
Schedule append_step_end(const Schedule& s, const std::vector<std::vector<int>>& tied_stages, bool data_parallel);

// The stage that names a rank's end-of-step actions (its lowest), or -1 for a rank without stages.
int step_end_stage(const Schedule& s, int rank);

// Whether a rank takes part in a REDUCE_TIED: one of its stages is tied to a stage on another rank.
bool reduces_tied(const Schedule& s, int rank);

// The other ranks a rank shares a cross-rank tie group with (ascending): its STEP waits for
// their REDUCE_TIED.
std::vector<int> tied_partner_ranks(const Schedule& s, int rank);

}  // namespace tpipe
