// The data-parallel part of a step, for planning at scale: each pipeline rank all-reduces its
// stages' gradients with its replicas (one ring per pipeline position, all rings at once) as soon
// as its own part of the pipeline is done, and the step ends when the last ring does.
//
// A ring all-reduce over n ranks (reduce-scatter then all-gather; Patarasuk & Yuan, 2009, and
// NCCL's ring) takes 2(n-1) steps, each sending bytes/n to the next rank:
//   t(bytes, n) = 2(n-1) * latency + 2(n-1)/n * bytes / bandwidth        (0 for n = 1)
#pragma once

#include <vector>

#include "tpipe/schedule/simulator.h"

namespace tpipe {

struct Network {
  double bandwidth = 12.5e9;  // bytes/s a rank sends and receives at once (100 Gb/s)
  double latency = 5e-6;      // seconds per ring step
};

double ring_allreduce_seconds(double bytes, int ranks, const Network& net);

struct DpStep {
  double step = 0;             // seconds: the slowest pipeline rank's end plus its all-reduce
  double pipeline = 0;         // the pipeline's makespan
  double allreduce = 0;        // the longest all-reduce of one pipeline rank
  double allreduce_share = 0;  // (step - pipeline) / step: the all-reduce time the pipeline does not hide
  int slowest_rank = 0;        // the pipeline rank that ends the step
};

// `sim`: the pipeline simulated with costs in seconds (its end_per_rank); `bytes_per_rank`: the
// gradient bytes each pipeline rank holds; `dp` replicas.
DpStep dp_step(const SimResult& sim, const std::vector<double>& bytes_per_rank, int dp, const Network& net);

}  // namespace tpipe
