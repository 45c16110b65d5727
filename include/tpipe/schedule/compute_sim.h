// The simulator at scale: replays only the compute actions (F, B, W) of a generated schedule, as
// a compute-only Schedule from compute_schedule (generators.h), with flat arrays indexed by
// (stage, micro-batch) instead of a map of every action, so 1024 stages x 8192 micro-batches
// (17 million compute actions) plan in well under a second with memory linear in the actions.
//
// It models the executor exactly as simulate() does, because sends cost nothing and follow
// their producer at once (comm_pass.h): a forward waits for the previous stage's forward of its
// micro-batch, a backward for the next stage's backward, plus Costs::comm when the two stages are
// on different ranks, and end-of-step work costs nothing. Makespan, busy time, bubbles and peak
// in-flight micro-batches equal simulate()'s for the same schedule (tested for every generator
// up to p = 8, m = 16). A schedule that would deadlock throws ScheduleError naming a rank that
// waits and what for. Costs::by_action is not used (it names actions of plans small enough for
// simulate()).
#pragma once

#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {

// The SimResult without its timeline.
SimResult simulate_compute(const Schedule& compute_only, const Costs& costs = {});

}  // namespace tpipe

namespace tpipe {

// The makespan of `compute_only` when its ranks, and `replicas` copies of them doing the same
// (data parallelism), share `cores` cores: at any moment the k ranks of a pipeline that are
// computing run at min(1, cores / (k x replicas)) of their own speed, the others waiting for a
// message or at their end. So a rank idle in its bubble leaves its core to the others, and the
// result lies between simulate_compute's makespan and all the work over the cores. Throws
// ScheduleError as simulate_compute does.
double shared_cores_makespan(const Schedule& compute_only, const Costs& costs, double cores, int replicas = 1);

}  // namespace tpipe
