// Appends REDUCE_TIED / REDUCE_DP / STEP to each rank (see step_end.h).
#include "tpipe/schedule/step_end.h"

#include <algorithm>

#include "tpipe/error.h"

namespace tpipe {

Schedule append_step_end(const Schedule& in, const std::vector<std::vector<int>>& tied_stages, bool data_parallel) {
  Schedule out = in;
  out.tied_stages = tied_stages;
  for (const auto& group : tied_stages)
    for (int st : group)
      if (st < 0 || st >= in.num_stages())
        throw ScheduleError("a tied group names stage " + std::to_string(st) + ", but there are " +
                            std::to_string(in.num_stages()) + " stages");
  auto tied = [&](int st) {
    return std::any_of(tied_stages.begin(), tied_stages.end(),
                       [&](const auto& g) { return std::find(g.begin(), g.end(), st) != g.end(); });
  };
  for (int st = 0; st < in.num_stages(); ++st) {
    auto& list = out.ranks[in.rank_of(st)];
    if (tied(st)) list.push_back({st, Op::ReduceTied, -1});
    if (data_parallel) list.push_back({st, Op::ReduceDp, -1});
  }
  for (int st = 0; st < in.num_stages(); ++st) out.ranks[in.rank_of(st)].push_back({st, Op::OptimizerStep, -1});
  return out;
}

}  // namespace tpipe
