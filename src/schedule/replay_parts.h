// What both compute-only replays share (compute_sim.cpp, shared_sim.cpp; see compute_sim.h).
#pragma once

#include <vector>

#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::detail {

// Each stage's F, B and W cost: the per-stage values of Costs where given, else its single ones.
struct StageCosts {
  std::vector<double> f, b, w;
  StageCosts(const Costs& c, int stages);
  double of(const Action& a) const {
    return a.op == Op::Forward ? f[a.stage] : a.op == Op::Backward ? b[a.stage] : w[a.stage];
  }
};

// The stage whose output compute action `a` waits for: the previous stage's forward for a
// forward, the next stage's backward for a backward; -1 for none (W, and the pipeline's ends).
inline int producer_stage(const Action& a, int stages) {
  if (a.op == Op::Forward && a.stage > 0) return a.stage - 1;
  if (a.op == Op::Backward && a.stage < stages - 1) return a.stage + 1;
  return -1;
}

// Throws ScheduleError unless compute action `a`, listed by rank r, is one of r's stages'
// micro-batches.
void check_listed(const Schedule& s, int r, const Action& a);

}  // namespace tpipe::detail
