// Rank <-> (pipeline position, replica) and the communication groups (see topology.h).
#include "tpipe/topology.h"

#include <algorithm>
#include <string>

#include "tpipe/error.h"

namespace tpipe {

Topology::Topology(int pp, int dp) : pp_(pp), dp_(dp) {
  if (pp < 1 || dp < 1)
    throw ConfigError("pipeline and data-parallel sizes must be >= 1, got pp = " + std::to_string(pp) +
                      ", dp = " + std::to_string(dp));
}

Topology Topology::for_world(int world_size, int dp) {
  if (dp < 1 || world_size < 1 || world_size % dp != 0)
    throw ConfigError("world size " + std::to_string(world_size) + " is not a multiple of dp = " + std::to_string(dp) +
                      ": start pp x dp ranks");
  return Topology(world_size / dp, dp);
}

int Topology::rank(int position, int replica) const {
  if (position < 0 || position >= pp_ || replica < 0 || replica >= dp_)
    throw ConfigError("(position " + std::to_string(position) + ", replica " + std::to_string(replica) +
                      ") is outside pp = " + std::to_string(pp_) + " x dp = " + std::to_string(dp_));
  return position * dp_ + replica;
}

int Topology::position_of(int r) const { return r / dp_; }
int Topology::replica_of(int r) const { return r % dp_; }

std::vector<int> Topology::pipeline_ranks(int replica) const {
  std::vector<int> out;
  for (int s = 0; s < pp_; ++s) out.push_back(rank(s, replica));
  return out;
}

std::vector<int> Topology::dp_ranks(int position) const {
  std::vector<int> out;
  for (int d = 0; d < dp_; ++d) out.push_back(rank(position, d));
  return out;
}

std::vector<int> Topology::ranks_of_positions(const std::vector<int>& positions) const {
  std::vector<int> out;
  for (int s : positions)
    for (int d = 0; d < dp_; ++d) out.push_back(rank(s, d));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Topology::check_world(int world_size) const {
  if (world_size != pp_ * dp_)
    throw ConfigError("world size " + std::to_string(world_size) + " does not match pp = " + std::to_string(pp_) +
                      " x dp = " + std::to_string(dp_) + " = " + std::to_string(pp_ * dp_) +
                      "; start pp x dp ranks (tpipe run -n " + std::to_string(pp_ * dp_) + ")");
}

}  // namespace tpipe
