// What every rank records of the actions it executes, gathered on rank 0 after each step. Times
// are microseconds on rank 0's clock (each rank's offset estimated at start-up), counted from
// the engine's start, so the steps of a run lie one after another on one time line.
//
// A RECV event spans the time its consumer waited for the data (zero when it had arrived), a
// SEND event the time to queue the message; REDUCE_* the time to start the reductions, STEP the
// wait for them plus clipping and the optimizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::trace {

struct Event {
  int rank = 0;
  Action action;
  double start_us = 0;
  double end_us = 0;
  std::int64_t bytes = 0;        // payload bytes sent or received (SEND / RECV)
  std::int64_t stash_bytes = 0;  // activation bytes the rank holds after the action (stash and sends)
  int peer = -1;                 // the other rank of a message
  // Measured (memory.h), -1 when not: the most activation bytes the rank held during the action
  // (StepResult::activation_peak_bytes), and the most bytes of tensor storage it held then.
  std::int64_t activation_bytes = -1;
  std::int64_t memory_bytes = -1;
};

struct RankInfo {
  int rank = 0;
  std::vector<int> stages;  // this rank's stages, ascending (several with virtual stages)
  int replica = 0;
  // How far this rank's times may be off rank 0's: half the shortest round trip of the clock
  // sync (0 on rank 0). A loaded machine stretches it from microseconds to milliseconds.
  double clock_error_us = 0;
};

// "stage 1", or "stages 0,3" for a rank holding several.
std::string stages_label(const std::vector<int>& stages);
inline std::string stages_label(const RankInfo& r) { return stages_label(r.stages); }

struct StepTrace {
  std::int64_t step = 0;
  std::vector<RankInfo> ranks;  // index = rank
  std::vector<Event> events;    // every rank's, each rank's in execution order
  double start_us() const;      // earliest start
  double end_us() const;        // latest end
};

// Idle share of the step: per rank 1 - compute time / span, overall 1 - total compute / (ranks *
// span); compute = F, B and W events. Span = end_us() - start_us() of the whole step.
struct Bubble {
  std::vector<double> per_rank;
  double overall = 0;
};
Bubble measured_bubble(const StepTrace& t);

// Per rank, the largest measured activation_bytes and memory_bytes of its events (empty vectors
// when the events carry no measurement).
struct MeasuredMemory {
  std::vector<std::int64_t> activation_peak_bytes;
  std::vector<std::int64_t> memory_peak_bytes;
};
MeasuredMemory measured_memory(const StepTrace& t);

// A planned schedule in the same shape, so plan and measurement are drawn alike: one time unit
// of the simulation becomes `unit_us` microseconds. Ranks are pipeline positions (replica 0).
StepTrace from_simulation(const Schedule& s, const SimResult& r, double unit_us = 1000.0);

}  // namespace tpipe::trace
