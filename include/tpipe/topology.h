// Topology {pp, dp}: where each rank sits in the grid of pipeline positions x data-parallel
// replicas, and the groups that talk. A position holds one stage, or several (virtual stages:
// the schedule's stage_rank says which). Rank layout as in DeepSpeed's pipe x data topology: the
// replicas of a position are neighbours, so with pp = 2, dp = 2:
//
//               replica 0   replica 1
//   position 0    rank 0      rank 1      <- data-parallel group of position 0: {0, 1}
//   position 1    rank 2      rank 3      <- data-parallel group of position 1: {2, 3}
//                 pipeline 0 = {0, 2}, pipeline 1 = {1, 3} exchange activations and gradients
//
// Tied groups: every rank at a position holding a stage that shares a weight, in every replica.
#pragma once

#include <vector>

namespace tpipe {

class Topology {
 public:
  Topology(int pp, int dp);  // throws ConfigError unless both are >= 1

  // pp = world / dp; throws ConfigError naming both when dp does not divide the world.
  static Topology for_world(int world_size, int dp);

  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int world_size() const { return pp_ * dp_; }

  int rank(int position, int replica) const;
  int position_of(int rank) const;
  int replica_of(int rank) const;

  std::vector<int> pipeline_ranks(int replica) const;  // position order
  std::vector<int> dp_ranks(int position) const;       // replica order
  // All ranks at any of `positions`, in every replica, ascending.
  std::vector<int> ranks_of_positions(const std::vector<int>& positions) const;

  // Throws ConfigError unless world_size == pp * dp.
  void check_world(int world_size) const;

 private:
  int pp_;
  int dp_;
};

}  // namespace tpipe
