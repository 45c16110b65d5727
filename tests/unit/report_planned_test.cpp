// The plan drawn beside a measured step (report/planned.h).
#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/report/planned.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::report {
namespace {

// A step "measured" as the simulator plays it with uneven per-stage costs: planning with its
// mean costs gives back the same bubble and the same span.
TEST(ReportPlanned, ASimulatedStepPlansToItself) {
  for (const char* name : {"gpipe", "1f1b", "zb-h1"}) {
    const Schedule s = make_schedule(name, 3, 6);
    Costs c;
    c.forward_by_stage = {100, 150, 120};
    c.backward_by_stage = {200, 260, 240};
    c.weight_by_stage = {80, 90, 70};
    const SimResult truth = simulate(s, c);
    trace::StepTrace measured = trace::from_simulation(s, truth, 1.0);
    measured.step = 7;
    const PlannedStep p = plan_like(s, measured);
    EXPECT_DOUBLE_EQ(p.bubble, truth.bubble) << name;
    EXPECT_DOUBLE_EQ(p.trace.end_us() - p.trace.start_us(), measured.end_us() - measured.start_us()) << name;
    EXPECT_EQ(p.trace.step, 7);
    EXPECT_NE(p.what.find("step 7"), std::string::npos);
  }
}

TEST(ReportPlanned, AStageWithoutMeasurementsIsAnError) {
  const Schedule s = make_schedule("gpipe", 2, 2);
  trace::StepTrace empty;
  EXPECT_THROW(plan_like(s, empty), ScheduleError);
}

}  // namespace
}  // namespace tpipe::report
