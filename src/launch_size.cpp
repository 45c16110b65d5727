// How many ranks a launch may start on this machine (see launcher.h).
#include <sched.h>

#include <algorithm>
#include <climits>
#include <thread>

#include "tpipe/error.h"
#include "tpipe/launcher.h"

namespace tpipe {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

}  // namespace

void check_launch_size(int nproc, int nnodes, int node_rank, int cores) {
  require(nproc >= 1, "--nproc-per-node must be at least 1, got " + std::to_string(nproc));
  require(nnodes >= 1, "--nnodes must be at least 1, got " + std::to_string(nnodes));
  require(node_rank >= 0 && node_rank < nnodes,
          "--node-rank must be in [0, " + std::to_string(nnodes - 1) + "] with --nnodes " + std::to_string(nnodes) +
              ", got " + std::to_string(node_rank));
  const long long usable = std::max(1, cores);
  const long long by_cores = kRanksPerCore * usable;
  const long long most = std::min<long long>(by_cores, kMaxLocalRanks);
  require(nproc <= most, "cannot start " + std::to_string(nproc) + " ranks on this machine: at most " +
                             std::to_string(most) +
                             (by_cores <= kMaxLocalRanks
                                  ? " (" + std::to_string(kRanksPerCore) + " per core on " + std::to_string(usable) +
                                        (usable == 1 ? " core)" : " cores)")
                                  : " (the limit for one machine)"));
  const long long world = static_cast<long long>(nnodes) * nproc;
  require(world <= INT_MAX, "--nnodes " + std::to_string(nnodes) + " x " + std::to_string(nproc) +
                                " ranks per node = " + std::to_string(world) + " ranks, more than a job can have (at most " +
                                std::to_string(INT_MAX) + ")");
}

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace tpipe
