// The pass that turns a compute-only schedule into one the executor can run, by adding the
// point-to-point actions between stages on different ranks.
//
// A send goes right after the action that produced the tensor. A receive is posted one compute
// action before the action that consumes it, so the transfer overlaps with that computation
// (receives are non-blocking; the consumer waits for them):
//   rank 0 (1F1B, p = 2):  0F0 0SEND_F0 0RECV_B0 0F1 0SEND_F1 0B0 0RECV_B1 0F2 ...
//   rank 1 (1F1B, p = 2):  1RECV_F0 1F0 1RECV_F1 1B0 1SEND_B0 1F1 1RECV_F2 1B1 ...
#pragma once

#include "tpipe/schedule/schedule.h"

namespace tpipe {

// Requires a schedule without comm actions; returns it with SEND_*/RECV_* inserted.
Schedule insert_comms(const Schedule& compute_only);

// The action on the peer rank that matches a comm action (SEND_F s <-> RECV_F s+1,
// SEND_B s <-> RECV_B s-1).
Action matching_comm(const Action& comm);

// The rank a comm action talks to.
int comm_peer(const Schedule& s, const Action& comm);

}  // namespace tpipe
