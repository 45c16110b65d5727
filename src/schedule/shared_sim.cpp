// Ranks sharing cores (see compute_sim.h, shared_cores_makespan): a fluid replay in global time.
// Between two events (an action ends, a message arrives) every computing rank progresses at the
// same rate, set by how many compute at once.
#include <algorithm>
#include <limits>
#include <vector>

#include "replay_parts.h"
#include "tpipe/error.h"
#include "tpipe/schedule/compute_sim.h"

namespace tpipe {

double shared_cores_makespan(const Schedule& s, const Costs& c, double cores, int replicas) {
  if (!(cores > 0) || replicas < 1) throw ScheduleError("sharing cores needs cores > 0 and replicas >= 1");
  const int R = s.num_ranks(), S = s.num_stages(), M = s.num_microbatches;
  if (M < 1 || S < 1) throw ScheduleError("an empty schedule has nothing to simulate");
  const detail::StageCosts cost(c, S);
  const double kNever = -1, inf = std::numeric_limits<double>::infinity();
  std::vector<double> f_end(static_cast<std::size_t>(S) * M, kNever), b_end = f_end;
  std::vector<std::vector<Action>> lists(R);
  for (int r = 0; r < R; ++r)
    for (const Action& a : s.ranks[r])
      if (is_compute(a.op)) detail::check_listed(s, r, a), lists[r].push_back(a);
  std::vector<std::size_t> next(R, 0);
  std::vector<double> left(R, 0.0);  // work left of the running action; < 0: not running
  std::fill(left.begin(), left.end(), -1.0);
  double t = 0;
  // When rank r's next action may start: now or later (its input arrives then), or never yet.
  auto ready_at = [&](int r) {
    const Action& a = lists[r][next[r]];
    const int from = detail::producer_stage(a, S);
    if (from < 0) return t;
    const double end = (a.op == Op::Forward ? f_end : b_end)[static_cast<std::size_t>(from) * M + a.mb];
    if (end == kNever) return inf;
    return std::max(t, end + (s.stage_rank[from] != r ? c.comm : 0.0));
  };
  for (;;) {
    int running = 0, unfinished = 0;
    double next_arrival = inf;
    for (int r = 0; r < R; ++r) {
      if (next[r] >= lists[r].size()) continue;
      ++unfinished;
      if (left[r] < 0) {
        const double at = ready_at(r);
        if (at <= t) left[r] = cost.of(lists[r][next[r]]);
        else next_arrival = std::min(next_arrival, at);
      }
      running += left[r] >= 0;
    }
    if (unfinished == 0) return t;
    if (running == 0) {
      if (next_arrival == inf) throw ScheduleError("deadlock in " + s.name + " while sharing cores: no rank can proceed");
      t = next_arrival;
      continue;
    }
    const double rate = std::min(1.0, cores / (static_cast<double>(running) * replicas));
    double dt = next_arrival - t;
    for (int r = 0; r < R; ++r)
      if (left[r] >= 0) dt = std::min(dt, left[r] / rate);
    t += dt;
    for (int r = 0; r < R; ++r) {
      if (left[r] < 0) continue;
      left[r] -= dt * rate;
      if (left[r] > 1e-12 * (1 + t)) continue;
      const Action& a = lists[r][next[r]];
      if (a.op == Op::Forward) f_end[static_cast<std::size_t>(a.stage) * M + a.mb] = t;
      if (a.op == Op::Backward) b_end[static_cast<std::size_t>(a.stage) * M + a.mb] = t;
      left[r] = -1;
      ++next[r];
    }
  }
}

}  // namespace tpipe
