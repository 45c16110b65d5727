// The compute-only simulator (see compute_sim.h). Event driven: a rank runs its list until an
// action's input is missing, then waits; finishing an action wakes the one rank that consumes it.
// Every action is visited once.
#include "tpipe/schedule/compute_sim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "replay_parts.h"
#include "tpipe/error.h"

namespace tpipe {
namespace {

constexpr double kNotYet = -1;

// `cells` entries of kNotYet. Tables of this size (100 MiB at 1024 x 8192) are mostly the cost of
// touching fresh pages, which is slow on virtual machines: the kernel is asked for huge pages
// (transparent huge pages in "madvise" mode) before the first touch.
std::vector<double> fresh_table(std::size_t cells) {
  std::vector<double> t;
  t.reserve(cells);
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(t.data()) + page - 1) / page * page;
  const auto end = reinterpret_cast<std::uintptr_t>(t.data() + cells) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: may fail
  t.assign(cells, kNotYet);
  return t;
}

struct Replay {
  const Schedule& s;
  const int S, M;
  std::vector<double> f_end, b_end;  // [stage * M + mb]: when it ended, kNotYet before
  detail::StageCosts cost;

  Replay(const Schedule& sched, const Costs& costs)
      : s(sched), S(sched.num_stages()), M(sched.num_microbatches), cost(costs, S) {
    const auto cells = static_cast<std::size_t>(S) * static_cast<std::size_t>(M);
    f_end = fresh_table(cells);
    b_end = fresh_table(cells);
  }

  std::size_t cell(int stage, int mb) const {
    return static_cast<std::size_t>(stage) * static_cast<std::size_t>(M) + static_cast<std::size_t>(mb);
  }

  // The stage whose action an action waits for (-1: none), with the end time table it is in.
  int producer(const Action& a, const std::vector<double>*& table) const {
    table = a.op == Op::Forward ? &f_end : &b_end;
    return detail::producer_stage(a, S);
  }
};

}  // namespace

namespace detail {

StageCosts::StageCosts(const Costs& c, int stages) {
  auto by_stage = [&](const std::vector<double>& v, double fallback) {
    std::vector<double> out(stages, fallback);
    for (int st = 0; st < stages && st < static_cast<int>(v.size()); ++st) out[st] = v[st];
    return out;
  };
  f = by_stage(c.forward_by_stage, c.forward);
  b = by_stage(c.backward_by_stage, c.backward);
  w = by_stage(c.weight_by_stage, c.weight);
}

void check_listed(const Schedule& s, int r, const Action& a) {
  if (a.stage < 0 || a.stage >= s.num_stages() || s.stage_rank[a.stage] != r || a.mb < 0 ||
      a.mb >= s.num_microbatches)
    throw ScheduleError("rank " + std::to_string(r) + " lists " + to_string(a) +
                        ", which is not one of its stages' micro-batches");
}

}  // namespace detail

SimResult simulate_compute(const Schedule& s, const Costs& costs) {
  if (s.num_microbatches < 1 || s.num_stages() < 1) throw ScheduleError("an empty schedule has nothing to simulate");
  Replay p(s, costs);
  const int R = s.num_ranks();
  SimResult res;
  res.busy_per_rank.assign(R, 0.0);
  res.peak_inflight_per_rank.assign(R, 0);
  std::vector<std::size_t> next(R, 0);
  std::vector<double> clock(R, 0.0);
  std::vector<int> inflight(R, 0);
  // What a blocked rank waits for: 2 x the producer's cell, + 1 for a backward; -1 if not blocked.
  // Kept here rather than read from the rank's list, which is far away in memory.
  std::vector<std::int64_t> waits_for(R, -1);
  auto key = [&](Op op, int stage, int mb) {
    return static_cast<std::int64_t>(p.cell(stage, mb)) * 2 + (op == Op::Backward ? 1 : 0);
  };
  std::vector<int> ready(R);
  for (int r = 0; r < R; ++r) ready[r] = R - 1 - r;  // rank 0 first
  while (!ready.empty()) {
    const int r = ready.back();
    ready.pop_back();
    waits_for[r] = -1;
    const auto& list = s.ranks[r];
    for (; next[r] < list.size(); ++next[r]) {
      const Action& a = list[next[r]];
      if (!is_compute(a.op)) continue;
      detail::check_listed(s, r, a);
      double start = clock[r];
      const std::vector<double>* table = nullptr;
      if (const int from = p.producer(a, table); from >= 0) {
        const double end = (*table)[p.cell(from, a.mb)];
        if (end == kNotYet) {
          waits_for[r] = key(a.op, from, a.mb);  // woken by the producer's rank
          break;
        }
        start = std::max(start, end + (s.stage_rank[from] != r ? costs.comm : 0.0));
      }
      const double cost = p.cost.of(a);
      clock[r] = start + cost;
      res.busy_per_rank[r] += cost;
      if (a.op == Op::Forward) {
        p.f_end[p.cell(a.stage, a.mb)] = clock[r];
        res.peak_inflight_per_rank[r] = std::max(res.peak_inflight_per_rank[r], ++inflight[r]);
      } else if (a.op == Op::Backward) {
        p.b_end[p.cell(a.stage, a.mb)] = clock[r];
        --inflight[r];
      }
      // The one rank that consumes this action's output may be waiting for exactly it.
      const int consumer_stage = a.op == Op::Forward ? a.stage + 1 : a.op == Op::Backward ? a.stage - 1 : -1;
      if (consumer_stage >= 0 && consumer_stage < p.S) {
        const int q = s.stage_rank[consumer_stage];
        if (q != r && waits_for[q] == key(a.op, a.stage, a.mb)) waits_for[q] = -1, ready.push_back(q);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    if (next[r] < s.ranks[r].size()) {
      const Action& a = s.ranks[r][next[r]];
      const std::vector<double>* table = nullptr;
      const int from = p.producer(a, table);
      throw ScheduleError("deadlock in " + (s.name.empty() ? std::string("schedule") : s.name + " schedule") +
                          ": no rank can proceed; rank " + std::to_string(r) + " waits at " + to_string(a) +
                          " for " + to_string(Action{from, a.op, a.mb}) + " on rank " +
                          std::to_string(s.rank_of(from)));
    }
  finish_result(res, std::move(clock));
  return res;
}

}  // namespace tpipe
