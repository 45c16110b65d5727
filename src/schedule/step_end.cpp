// Appends REDUCE_TIED / REDUCE_DP / STEP once per rank (see step_end.h).
#include "tpipe/schedule/step_end.h"

#include <algorithm>
#include <set>

#include "tpipe/error.h"

namespace tpipe {
namespace {

// The ranks a tie group's stages live on.
std::set<int> ranks_of_group(const Schedule& s, const std::vector<int>& group) {
  std::set<int> ranks;
  for (int st : group) ranks.insert(s.rank_of(st));
  return ranks;
}

}  // namespace

int step_end_stage(const Schedule& s, int rank) {
  for (int st = 0; st < s.num_stages(); ++st)
    if (s.rank_of(st) == rank) return st;
  return -1;
}

std::vector<int> tied_partner_ranks(const Schedule& s, int rank) {
  std::set<int> partners;
  for (const auto& group : s.tied_stages) {
    const std::set<int> ranks = ranks_of_group(s, group);
    if (ranks.size() < 2 || !ranks.count(rank)) continue;
    partners.insert(ranks.begin(), ranks.end());
  }
  partners.erase(rank);
  return {partners.begin(), partners.end()};
}

bool reduces_tied(const Schedule& s, int rank) { return !tied_partner_ranks(s, rank).empty(); }

Schedule append_step_end(const Schedule& in, const std::vector<std::vector<int>>& tied_stages, bool data_parallel) {
  Schedule out = in;
  out.tied_stages = tied_stages;
  for (const auto& group : tied_stages)
    for (int st : group)
      if (st < 0 || st >= in.num_stages())
        throw ScheduleError("a tied group names stage " + std::to_string(st) + ", but there are " +
                            std::to_string(in.num_stages()) + " stages");
  for (int r = 0; r < in.num_ranks(); ++r) {
    const int st = step_end_stage(out, r);
    if (st < 0) continue;  // a rank without stages has nothing to reduce or step
    auto& list = out.ranks[r];
    if (reduces_tied(out, r)) list.push_back({st, Op::ReduceTied, -1});
    if (data_parallel) list.push_back({st, Op::ReduceDp, -1});
    list.push_back({st, Op::OptimizerStep, -1});
  }
  return out;
}

}  // namespace tpipe
