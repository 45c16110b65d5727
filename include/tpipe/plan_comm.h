// What communication costs the layout planner (plan.h) charges, measured on the machine the
// ranks will run on or, when not measured, a fixed latency and bandwidth. Pure and torch-free:
// tools/comm_probe measures the numbers with real ranks, this fits and looks them up.
//
// Every cost is a line, latency + bytes / bytes_per_s, fitted through two timings (a small and
// a large message). Point-to-point: one message between two ranks while every other pair of
// ranks exchanges one too. All-reduce: a group of g ranks sums a buffer while the world, cut
// into groups of g, does the same (data parallelism reduces in every pipeline position at once).
// Timings with all ranks alive matter where ranks outnumber cores: each hop of a collective then
// waits for its rank to be scheduled (measured on a 2-core VM with 4 ranks: a 1.6 MB all-reduce
// of pairs 3-8 ms, against 0.9 ms from the fixed 2 GB/s).
#pragma once

#include <map>

namespace tpipe {

struct LinearCost {
  double latency_s = 0;
  double bytes_per_s = 0;  // <= 0: the line is not set
  double seconds(double bytes) const { return latency_s + (bytes_per_s > 0 ? bytes / bytes_per_s : 0.0); }
};

// The line through (bytes_small, s_small) and (bytes_large, s_large), bytes_small < bytes_large.
// A slope that is not positive (noise: the large one no slower) gives the large one's mean rate
// with no latency; a negative intercept is cut to 0 with the slope kept.
LinearCost fit_linear_cost(double bytes_small, double s_small, double bytes_large, double s_large);

struct CommCosts {
  LinearCost point_to_point;             // unset (bytes_per_s <= 0): not measured
  LinearCost sending;                    // what starting a send costs the sender (unset: nothing)
  std::map<int, LinearCost> all_reduce;  // by group size (>= 2)
  int ranks = 0;                         // how many ranks were alive when measured (0: not measured)
};

// Seconds for one point-to-point message, and for an all-reduce of `bytes` in groups of
// `group` ranks (0 for group <= 1): the measured line when there is one, else a ring all-reduce
// at the fixed latency and bandwidth, 2 (g-1) x latency + 2 (g-1)/g x bytes / bandwidth.
double message_seconds(const CommCosts& c, double bytes, double latency_s, double bytes_per_s);
// What starting a send of `bytes` costs the sending rank: the measured line, else nothing.
double sending_seconds(const CommCosts& c, double bytes);
double all_reduce_seconds(const CommCosts& c, int group, double bytes, double latency_s, double bytes_per_s);

}  // namespace tpipe
