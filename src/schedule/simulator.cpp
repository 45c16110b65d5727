// Replays a schedule on a model of the executor (see simulator.h and validator.h for the rules).
// Ranks advance in rounds; a rank stops at a compute action whose input has not been sent yet.
// When a round moves no rank and some are unfinished, the schedule deadlocks.
#include "tpipe/schedule/simulator.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "tpipe/error.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/step_end.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

using Key = std::tuple<int, Op, int>;

double cost_of(const Costs& c, const Action& a) {
  if (!c.by_action.empty())
    if (auto it = c.by_action.find(to_string(a)); it != c.by_action.end()) return it->second;
  auto staged = [&](const std::vector<double>& v, double fallback) {
    return a.stage < static_cast<int>(v.size()) ? v[a.stage] : fallback;
  };
  switch (a.op) {
    case Op::Forward: return staged(c.forward_by_stage, c.forward);
    case Op::Backward: return staged(c.backward_by_stage, c.backward);
    case Op::Weight: return staged(c.weight_by_stage, c.weight);
    default: return 0;
  }
}

struct Dep {
  Action action;
  bool remote;  // a message from another rank: the comm latency applies
};

// What an action waits for from other stages: the input of a compute action (the peer's send, or
// the same-rank producer), or for a STEP the REDUCE_TIED of every rank it shares a tied weight
// with (named, like all end-of-step work, by that rank's lowest stage).
std::vector<Dep> dependencies(const Schedule& s, const Action& a) {
  std::vector<Dep> deps;
  if (a.op == Op::OptimizerStep) {
    for (int r : tied_partner_ranks(s, s.rank_of(a.stage)))
      deps.push_back({{step_end_stage(s, r), Op::ReduceTied, -1}, false});
    return deps;
  }
  const int last = s.num_stages() - 1;
  int from = -1;
  if (a.op == Op::Forward && a.stage > 0) from = a.stage - 1;
  if (a.op == Op::Backward && a.stage < last) from = a.stage + 1;
  if (from < 0) return deps;
  const bool remote = s.rank_of(from) != s.rank_of(a.stage);
  if (remote)
    deps.push_back({{from, a.op == Op::Forward ? Op::SendAct : Op::SendGrad, a.mb}, true});
  else
    deps.push_back({{from, a.op, a.mb}, false});
  return deps;
}

[[noreturn]] void report_deadlock(const Schedule& s, const std::vector<std::size_t>& next,
                                  const std::map<Key, double>& done) {
  std::string why;
  std::vector<std::pair<int, int>> marks;
  for (int r = 0; r < s.num_ranks(); ++r) {
    if (next[r] >= s.ranks[r].size()) continue;
    const Action& a = s.ranks[r][next[r]];
    marks.emplace_back(r, static_cast<int>(next[r]));
    for (const Dep& d : dependencies(s, a))
      if (!done.count({d.action.stage, d.action.op, d.action.mb}))
        why += "  rank " + std::to_string(r) + " waits at " + to_string(a) + " for " + to_string(d.action) +
               " on rank " + std::to_string(s.rank_of(d.action.stage)) + "\n";
  }
  throw ScheduleError("deadlock in " + (s.name.empty() ? std::string("schedule") : s.name + " schedule") +
                      ": no rank can proceed\n" + why + render_grid(s, marks));
}

}  // namespace

void finish_result(SimResult& res, std::vector<double> end_per_rank) {
  const int R = static_cast<int>(end_per_rank.size());
  res.makespan = R > 0 ? *std::max_element(end_per_rank.begin(), end_per_rank.end()) : 0.0;
  double idle = 0;
  res.bubble_per_rank.clear();
  for (int r = 0; r < R; ++r) {
    const double idle_r = res.makespan - res.busy_per_rank[r];
    idle += idle_r;
    res.bubble_per_rank.push_back(res.makespan > 0 ? idle_r / res.makespan : 0.0);
  }
  res.bubble = res.makespan > 0 ? idle / (R * res.makespan) : 0.0;
  res.end_per_rank = std::move(end_per_rank);
}

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
        bool blocked = false;
        for (const Dep& d : dependencies(s, a)) {
          auto it = done.find({d.action.stage, d.action.op, d.action.mb});
          if (it == done.end()) {
            blocked = true;  // until the peer gets there
            break;
          }
          ready = std::max(ready, it->second + (d.remote ? costs.comm : 0.0));
        }
        if (blocked) break;
        const double cost = cost_of(costs, a);
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

  finish_result(res, std::move(clock));
  return res;
}

}  // namespace tpipe
