// Replays a schedule on a model of the executor (see simulator.h and validator.h for the rules).
// Ranks advance in rounds; a rank stops at a compute action whose input has not been sent yet.
// When a round moves no rank and some are unfinished, the schedule deadlocks.
#include "tpipe/schedule/simulator.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "tpipe/error.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

using Key = std::tuple<int, Op, int>;

double cost_of(const Costs& c, Op op) {
  switch (op) {
    case Op::Forward: return c.forward;
    case Op::Backward: return c.backward;
    case Op::Weight: return c.weight;
    default: return 0;
  }
}

// What a compute action waits for from another stage: the action that must have run, and whether
// it is a send from another rank (then the comm latency applies).
bool dependency(const Schedule& s, const Action& a, Action& dep, bool& remote) {
  const int last = s.num_stages() - 1;
  int from = -1;
  if (a.op == Op::Forward && a.stage > 0) from = a.stage - 1;
  if (a.op == Op::Backward && a.stage < last) from = a.stage + 1;
  if (from < 0) return false;
  remote = s.rank_of(from) != s.rank_of(a.stage);
  if (remote)
    dep = {from, a.op == Op::Forward ? Op::SendAct : Op::SendGrad, a.mb};
  else
    dep = {from, a.op, a.mb};
  return true;
}

[[noreturn]] void report_deadlock(const Schedule& s, const std::vector<std::size_t>& next,
                                  const std::map<Key, double>& done) {
  std::string why;
  std::vector<std::pair<int, int>> marks;
  for (int r = 0; r < s.num_ranks(); ++r) {
    if (next[r] >= s.ranks[r].size()) continue;
    const Action& a = s.ranks[r][next[r]];
    marks.emplace_back(r, static_cast<int>(next[r]));
    Action dep;
    bool remote = false;
    dependency(s, a, dep, remote);
    why += "  rank " + std::to_string(r) + " waits at " + to_string(a) + " for " + to_string(dep) +
           " on rank " + std::to_string(s.rank_of(dep.stage)) + "\n";
  }
  throw ScheduleError("deadlock in " + (s.name.empty() ? std::string("schedule") : s.name + " schedule") +
                      ": no rank can proceed\n" + why + render_grid(s, marks));
}

}  // namespace

SimResult simulate(const Schedule& s, const Costs& costs) {
  check_structure(s);
  const int R = s.num_ranks();
  SimResult res;
  res.timeline.resize(R);
  res.busy_per_rank.assign(R, 0.0);
  res.peak_inflight_per_rank.assign(R, 0);
  std::vector<std::size_t> next(R, 0);
  std::vector<double> clock(R, 0.0);
  std::vector<int> inflight(R, 0);
  std::map<Key, double> done;  // executed action -> its end time

  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      for (; next[r] < s.ranks[r].size(); ++next[r]) {
        const Action& a = s.ranks[r][next[r]];
        double ready = clock[r];
        Action dep;
        bool remote = false;
        if (dependency(s, a, dep, remote)) {
          auto it = done.find({dep.stage, dep.op, dep.mb});
          if (it == done.end()) break;  // blocked until the peer gets there
          ready = std::max(ready, it->second + (remote ? costs.comm : 0.0));
        }
        const double cost = cost_of(costs, a.op);
        res.timeline[r].push_back({a, ready, ready + cost});
        clock[r] = ready + cost;
        res.busy_per_rank[r] += cost;
        done[{a.stage, a.op, a.mb}] = clock[r];
        if (a.op == Op::Forward) res.peak_inflight_per_rank[r] = std::max(res.peak_inflight_per_rank[r], ++inflight[r]);
        if (a.op == Op::Backward) --inflight[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    if (next[r] < s.ranks[r].size()) report_deadlock(s, next, done);

  res.makespan = *std::max_element(clock.begin(), clock.end());
  double idle = 0;
  for (int r = 0; r < R; ++r) {
    const double idle_r = res.makespan - res.busy_per_rank[r];
    idle += idle_r;
    res.bubble_per_rank.push_back(res.makespan > 0 ? idle_r / res.makespan : 0.0);
  }
  res.bubble = res.makespan > 0 ? idle / (R * res.makespan) : 0.0;
  return res;
}

}  // namespace tpipe
