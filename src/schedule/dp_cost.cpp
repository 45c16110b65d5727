// The data-parallel part of a step (see dp_cost.h).
#include "tpipe/schedule/dp_cost.h"

#include <algorithm>

#include "tpipe/error.h"

namespace tpipe {

double ring_allreduce_seconds(double bytes, int n, const Network& net) {
  if (n < 1 || bytes < 0 || !(net.bandwidth > 0) || net.latency < 0)
    throw ConfigError("an all-reduce needs ranks >= 1, bytes >= 0, bandwidth > 0 and latency >= 0");
  if (n == 1) return 0;
  return 2.0 * (n - 1) * net.latency + 2.0 * (n - 1) / n * bytes / net.bandwidth;
}

DpStep dp_step(const SimResult& sim, const std::vector<double>& bytes_per_rank, int dp, const Network& net) {
  if (bytes_per_rank.size() != sim.end_per_rank.size())
    throw ConfigError("dp_step: " + std::to_string(bytes_per_rank.size()) + " gradient sizes for " +
                      std::to_string(sim.end_per_rank.size()) + " pipeline ranks");
  DpStep d;
  d.pipeline = sim.makespan;
  for (std::size_t r = 0; r < bytes_per_rank.size(); ++r) {
    const double t = ring_allreduce_seconds(bytes_per_rank[r], dp, net);
    d.allreduce = std::max(d.allreduce, t);
    if (sim.end_per_rank[r] + t > d.step) d.step = sim.end_per_rank[r] + t, d.slowest_rank = static_cast<int>(r);
  }
  d.step = std::max(d.step, d.pipeline);
  d.allreduce_share = d.step > 0 ? (d.step - d.pipeline) / d.step : 0;
  return d;
}

}  // namespace tpipe
