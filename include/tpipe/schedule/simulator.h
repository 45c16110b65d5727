// Runs a schedule on a model of the executor with per-op costs: every rank executes its actions
// in order, a compute action starts when its rank is free and its input has arrived. Gives the
// makespan, the idle "bubble" per rank and overall, and the peak number of micro-batches in
// flight per rank (forward done, backward not yet), which bounds stashed activation memory.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

struct Costs {
  double forward = 1;
  double backward = 2;
  double weight = 1;  // W of a split backward (zero-bubble schedules)
  double comm = 0;    // latency from a send to the receiver being able to use the data
  // Per-stage costs (e.g. measured ones); where given they override forward / backward / weight.
  // A schedule without W actions runs the whole backward in B, so backward is then all of it.
  std::vector<double> forward_by_stage;
  std::vector<double> backward_by_stage;
  std::vector<double> weight_by_stage;
  // Per-action costs keyed by the action's text ("1F3"); where given they override the rest,
  // so a measured step can be replayed action by action.
  std::map<std::string, double> by_action;
};

struct TimedAction {
  Action action;
  double start = 0;
  double end = 0;
};

struct SimResult {
  double makespan = 0;
  double bubble = 0;                         // idle / (ranks * makespan)
  std::vector<double> busy_per_rank;
  std::vector<double> bubble_per_rank;       // idle_r / makespan
  std::vector<int> peak_inflight_per_rank;
  std::vector<double> end_per_rank;          // when each rank's last action ends
  std::vector<std::vector<TimedAction>> timeline;  // rank -> every action with its times
};

// Completes a result whose busy_per_rank is filled: each rank's end is `end_per_rank`, the
// makespan the latest, and the bubbles follow (both simulators end this way).
void finish_result(SimResult& r, std::vector<double> end_per_rank);

// Checks the structure, then replays. Throws ScheduleError on a malformed schedule or deadlock.
SimResult simulate(const Schedule& s, const Costs& costs = {});

}  // namespace tpipe
