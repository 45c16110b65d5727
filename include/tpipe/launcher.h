// The local launcher behind `tpipe run -n N -- PROGRAM ARGS...`: starts N ranks of one program with
// the variables torchrun sets, prefixes their output with `[rank k]`, and turns the first failure
// of any rank into the failure of the whole job (the others are stopped, never left hanging).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tpipe/ports.h"

namespace tpipe {

struct LaunchOptions {
  int nproc = 1;                        // ranks on this node
  int nnodes = 1;                       // nodes in the job
  int node_rank = 0;                    // this node's index; global rank = node_rank * nproc + local
  std::string master_addr = "127.0.0.1";
  int master_port = 0;                  // 0: pick a free port (single node only)
  std::vector<std::string> command;     // PROGRAM ARGS...
  // Further variables for every rank (e.g. tune_local_ranks()'s choice), replacing inherited ones.
  std::vector<std::pair<std::string, std::string>> env;
  // Per local rank, the CPUs it is bound to (sched_setaffinity before exec); empty: not bound.
  std::vector<std::vector<int>> cpus;
  std::chrono::milliseconds grace{5000};  // SIGTERM -> SIGKILL delay when stopping the others
};

// What happened to the job. `exit_code` is 0 when every rank exited 0; otherwise it is the
// failing rank's exit status (128 + signal when it was killed by a signal).
struct LaunchResult {
  int exit_code = 0;
  int failed_rank = -1;                 // first rank that failed, -1 if none
  std::string message;                  // e.g. "rank 1 exited with status 3; stopped ranks 0, 2"
};

// A sink for output lines, already prefixed with "[rank k] ". Called from the launching thread only.
using LineSink = std::function<void(const std::string& line, bool is_stderr)>;

// Starts the ranks and waits for all of them. Throws tpipe::ConfigError for bad options (nproc < 1,
// empty command, busy master port) before starting anything.
LaunchResult launch(const LaunchOptions& options, const LineSink& sink);

}  // namespace tpipe
