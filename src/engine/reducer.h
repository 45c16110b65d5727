// Private to the engine: the gradient reductions at the end of a step. Tied weights: their
// gradients are summed over every copy (the stages of the tie, in every replica). Everything
// else: summed over the stage's data-parallel group, in buckets of consecutive parameters, each
// started asynchronously so the pipeline's drain overlaps them. Each replica weights its losses
// by their share of the GLOBAL batch, so these sums are exactly the global mean's gradient.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpipe/comm/group.h"
#include "tpipe/topology.h"

namespace tpipe {

struct TiedParams {
  std::string key;
  std::vector<int> stages;           // stages holding a copy
  std::vector<at::Tensor> params;    // this stage's copy
  Group* group = nullptr;            // every rank holding a copy
  bool counts_for_norm = false;      // only the lowest stage's copy counts towards the global norm
};

class GradReducer {
 public:
  GradReducer(std::vector<TiedParams> tied, std::vector<at::Tensor> params, Group* dp_group,
              std::int64_t bucket_bytes = 25 << 20);

  // Makes every copy equal to the first member's: replica 0 for ordinary parameters, the lowest
  // stage of replica 0 for tied ones.
  void broadcast_initial();

  void start_tied();  // REDUCE_TIED
  void start_dp();    // REDUCE_DP
  void finish();      // waits for both and writes the sums back into the gradients

  // Sum of squared gradients this stage contributes to the global norm (tied weights once).
  double local_squared_norm() const;
  void scale_gradients(double factor);

  // Compares a checksum of every copy of every tied weight; throws Error naming the key and the
  // stages and replicas that differ. Collective over each tie group.
  void audit_ties(int rank, int stage, const Topology& topo) const;

  const std::vector<TiedParams>& tied() const { return tied_; }

 private:
  struct Bucket {
    std::vector<at::Tensor> params;
    at::Tensor flat;
    AsyncOp op;
  };
  void start(const std::vector<at::Tensor>& params, Group* group, const std::string& what);

  std::vector<TiedParams> tied_;
  std::vector<at::Tensor> params_;
  Group* dp_group_;
  std::int64_t bucket_bytes_;
  std::vector<Bucket> pending_;
};

}  // namespace tpipe
