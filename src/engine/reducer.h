// Private to the engine: the gradient reductions at the end of a step. Tied weights: their
// gradients are summed over every copy (the ranks holding the tie's stages, in every replica). Everything
// else: summed over the rank's data-parallel group, in buckets of consecutive parameters, each
// started asynchronously so the pipeline's drain overlaps them. Each replica weights its losses
// by their share of the GLOBAL batch, so these sums are exactly the global mean's gradient.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tpipe/comm/group.h"
#include "tpipe/error.h"

namespace tpipe {

struct TiedParams {
  std::string key;
  std::vector<at::Tensor> params;    // this rank's copy
  Group* group = nullptr;            // every rank holding a copy
  bool counts_for_norm = false;      // only the lowest position's copy counts towards the global norm
};

class GradReducer {
 public:
  GradReducer(std::vector<TiedParams> tied, std::vector<at::Tensor> params, Group* dp_group,
              std::int64_t bucket_bytes = 25 << 20);

  // Makes every copy equal to the first member's: replica 0 for ordinary parameters, the lowest
  // position of replica 0 for tied ones.
  void broadcast_initial();

  void start_tied();  // REDUCE_TIED
  void start_dp();    // REDUCE_DP
  void finish();      // waits for both and writes the sums back into the gradients

  // Sum of squared gradients this rank contributes to the global norm (tied weights once).
  double local_squared_norm() const;
  void scale_gradients(double factor);

  // Compares a checksum of every copy of every tied weight; throws Error naming the key and the
  // copies that differ (`describe` names the copy on a rank). Collective over each tie group.
  void audit_ties(const Where& here, const std::function<std::string(int rank)>& describe) const;

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
