// Measuring what communication costs on this machine with the ranks a layout will have, for
// tpipe plan's model (tpipe/plan_comm.h): `ranks` workers of this program time point-to-point
// messages through the Communicator (as the engine sends them) and all-reduces in groups of
// every size that divides the ranks, each at a small and a large size, every pair or group at once;
// and they time a training step of the model on one micro-batch (model_piece.h) alone and all at
// once.
#pragma once

#include "tpipe/plan_comm.h"
#include "tpipe/train/train_config.h"

namespace tpipe::cli {

// What the probe found: the communication lines, and how much slower the model's step runs
// with every rank computing at once than alone, beyond the ranks / cores that sharing `cores`
// evenly explains (>= 1; 1 for one rank).
struct RankProbe {
  CommCosts comm;
  double slowdown = 1;
};

// Runs the probe on `ranks` local ranks (tuned as tpipe train tunes them) and fits its lines.
// Fewer than 2 ranks: nothing to measure. Throws Error when a rank fails.
RankProbe probe_ranks(int ranks, int cores, const TrainConfig& model);

// The worker side: what `tpipe plan --probe-worker` runs in each rank; rank 0 reports.
int comm_probe_worker(const TrainConfig& model);

}  // namespace tpipe::cli
