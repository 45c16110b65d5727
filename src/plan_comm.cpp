// Communication costs for the planner (see plan_comm.h).
#include "tpipe/plan_comm.h"

#include <algorithm>

#include "tpipe/schedule/dp_cost.h"

namespace tpipe {

LinearCost fit_linear_cost(double bytes_small, double s_small, double bytes_large, double s_large) {
  LinearCost c;
  const double slope = (s_large - s_small) / (bytes_large - bytes_small);  // seconds per byte
  if (!(slope > 0)) {
    c.bytes_per_s = s_large > 0 ? bytes_large / s_large : 0;
    return c;
  }
  c.bytes_per_s = 1 / slope;
  c.latency_s = std::max(0.0, s_small - bytes_small * slope);
  return c;
}

double message_seconds(const CommCosts& c, double bytes, double latency_s, double bytes_per_s) {
  if (c.point_to_point.bytes_per_s > 0) return c.point_to_point.seconds(bytes);
  return latency_s + bytes / bytes_per_s;
}

double sending_seconds(const CommCosts& c, double bytes) {
  return c.sending.bytes_per_s > 0 ? c.sending.seconds(bytes) : 0.0;
}

double all_reduce_seconds(const CommCosts& c, int group, double bytes, double latency_s, double bytes_per_s) {
  if (group <= 1) return 0;
  if (auto it = c.all_reduce.find(group); it != c.all_reduce.end() && it->second.bytes_per_s > 0)
    return it->second.seconds(bytes);
  Network fixed;
  fixed.bandwidth = bytes_per_s;
  fixed.latency = latency_s;
  return ring_allreduce_seconds(bytes, group, fixed);
}

}  // namespace tpipe
