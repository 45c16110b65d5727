// The plan beside the measurement: what the simulator makes of a schedule when each stage's F, B
// and W take the mean time they took in a measured step (messages free, so the gap between the
// two is what communication and noise cost). Std only.
#pragma once

#include <string>

#include "tpipe/schedule/schedule.h"
#include "tpipe/trace/record.h"

namespace tpipe::report {

struct PlannedStep {
  trace::StepTrace trace;  // in the measured step's shape (microseconds), to draw like it
  double bubble = 0;       // the simulator's, over the forward and backward part of the step
  std::string what;        // how it was planned, for a caption
};

// Throws ScheduleError when `measured` has no compute action of some stage of `s`.
PlannedStep plan_like(const Schedule& s, const trace::StepTrace& measured);

}  // namespace tpipe::report
