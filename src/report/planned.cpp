// The simulator's plan with measured costs (see planned.h).
#include "tpipe/report/planned.h"

#include "tpipe/error.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::report {

PlannedStep plan_like(const Schedule& s, const trace::StepTrace& measured) {
  const auto S = static_cast<std::size_t>(s.num_stages());
  // Per stage and op (F, B, W): total time and count, over every replica.
  std::vector<double> sum(3 * S, 0.0), n(3 * S, 0.0);
  for (const auto& e : measured.events) {
    const Op op = e.action.op;
    const int k = op == Op::Forward ? 0 : op == Op::Backward ? 1 : op == Op::Weight ? 2 : -1;
    if (k < 0 || e.action.stage < 0 || static_cast<std::size_t>(e.action.stage) >= S) continue;
    sum[3 * e.action.stage + k] += e.end_us - e.start_us;
    n[3 * e.action.stage + k] += 1;
  }
  Costs c;
  c.comm = 0;
  for (std::size_t st = 0; st < S; ++st) {
    if (n[3 * st] == 0 || n[3 * st + 1] == 0)
      throw ScheduleError("the measured step has no forward or backward of stage " + std::to_string(st) +
                          " to plan with");
    c.forward_by_stage.push_back(sum[3 * st] / n[3 * st]);
    c.backward_by_stage.push_back(sum[3 * st + 1] / n[3 * st + 1]);
    c.weight_by_stage.push_back(n[3 * st + 2] > 0 ? sum[3 * st + 2] / n[3 * st + 2] : 0.0);
  }
  const SimResult r = simulate(s, c);
  PlannedStep p;
  p.trace = trace::from_simulation(s, r, 1.0);  // costs are microseconds already
  p.trace.step = measured.step;
  p.bubble = r.bubble;
  p.what = "the simulator with step " + std::to_string(measured.step) +
           "'s mean time of each stage's F, B and W; messages and the optimizer cost nothing";
  return p;
}

}  // namespace tpipe::report
