// Runs a schedule on a model of the executor with per-op costs: every rank executes its actions
// in order, a compute action starts when its rank is free and its input has arrived. Gives the
// makespan, the idle "bubble" per rank and overall, and the peak number of micro-batches in
// flight per rank (forward done, backward not yet), which bounds stashed activation memory.
#pragma once

#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

struct Costs {
  double forward = 1;
  double backward = 2;
  double weight = 1;  // W of a split backward (zero-bubble schedules)
  double comm = 0;    // latency from a send to the receiver being able to use the data
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
  std::vector<std::vector<TimedAction>> timeline;  // rank -> every action with its times
};

// Checks the structure, then replays. Throws ScheduleError on a malformed schedule or deadlock.
SimResult simulate(const Schedule& s, const Costs& costs = {});

}  // namespace tpipe
