// Proves a schedule runnable before any tensor moves. Rejects, with the rank x step grid and the
// failing action marked:
//   - an action on a rank that does not own its stage, a micro-batch out of range;
//   - a micro-batch whose forward or backward is missing or repeated, a backward before its
//     forward, a W before its B, end-of-step work before the last B or W of any stage of its rank, or
//     not once per rank as step_end.h says;
//   - a send with no matching receive (or the reverse), a receive after its consumer;
//   - a deadlock under the executor's blocking rules, found by running all ranks in simulation.
// The executor's rules: SEND and RECV never block (a receive is posted, the send is queued);
// a compute action waits for the data it consumes; a rank's step ends when its sends have been
// received. So a deadlock is a cycle of ranks each waiting for data another has not sent yet.
#pragma once

#include "tpipe/schedule/schedule.h"

namespace tpipe {

// Structure only (everything above but the deadlock). Throws ScheduleError.
void check_structure(const Schedule& s);

// Structure and deadlock freedom. Throws ScheduleError.
void validate(const Schedule& s);

}  // namespace tpipe
