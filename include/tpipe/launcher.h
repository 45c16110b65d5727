// The local launcher behind `tpipe run -n N -- PROGRAM ARGS...`: starts N ranks of one program with
// the variables torchrun sets, prefixes their output with `[rank k]`, and turns the first failure
// of any rank into the failure of the whole job (the others are stopped, never left hanging).
//
// No rank outlives the launcher: a launcher stopped by SIGINT, SIGTERM or SIGHUP stops its ranks
// first, and one that is killed outright (SIGKILL) takes them with it, as every rank asks the kernel
// for SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG). launch() therefore keeps the
// calling thread until every rank has exited; processes that a rank starts itself are its business.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
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
  // After the first rank fails, how long the others may still run before they are stopped, so that
  // a rank which reported its failure (report_rank_failure) can finish exiting on its own. The
  // wait ends early once every rank has exited, or once no running rank has reported (after 50 ms,
  // for reports being written).
  std::chrono::milliseconds settle{500};
};

// What happened to the job. `exit_code` is 0 when every rank exited 0; otherwise it is the
// failing rank's exit status (128 + signal when it was killed by a signal).
struct LaunchResult {
  int exit_code = 0;
  int failed_rank = -1;                 // the rank that failed first, -1 if none
  // e.g. "rank 1 exited with status 3; stopped ranks 0, 2", or when its peers failed too (as they
  // do when it breaks their connections) "rank 1 failed first (exit status 1); rank 0 failed after
  // it; stopped ranks 2".
  std::string message;
  std::string reason;                   // the first line failed_rank reported, "" if it did not
};

// A sink for output lines, already prefixed with "[rank k] ". Called from the launching thread only.
using LineSink = std::function<void(const std::string& line, bool is_stderr)>;

// Starts the ranks and waits for all of them. Throws tpipe::ConfigError for bad options (see
// check_launch_size; empty command, busy master port) before starting anything.
LaunchResult launch(const LaunchOptions& options, const LineSink& sink);

// ---- Limits -----------------------------------------------------------------------------------

// At most this many local ranks per usable core, and at most kMaxLocalRanks in all. Beyond 8 ranks
// a core, each rank gets less than an eighth of a core and collectives tend to time out instead of
// running slowly; beyond 256, the launcher's two pipes per rank and a Gloo rank's connection per
// peer approach the usual limit of 1024 open files per process.
constexpr int kRanksPerCore = 8;
constexpr int kMaxLocalRanks = 256;

// Refuses a job this machine cannot start, before anything is forked (tpipe::ConfigError):
//   nproc < 1, nnodes < 1, node_rank outside [0, nnodes), more local ranks than
//   min(kRanksPerCore * cores, kMaxLocalRanks), and nnodes * nproc ranks beyond what an int counts.
// `cores` is the number of cores this process may use (cores < 1 counts as 1). Pure.
void check_launch_size(int nproc, int nnodes, int node_rank, int cores);

// The cores this process may use (its CPU affinity), at least 1.
int usable_cores();

// ---- Which rank failed first --------------------------------------------------------------------
//
// When a rank fails, its peers usually fail a few milliseconds later (a broken connection), and
// the launcher may reap one of them first. So every rank gets, in kFailureFileVariable, the path of
// a file of its own where it records when it failed; the launcher blames the earliest failure.

constexpr const char* kFailureFileVariable = "TPIPE_FAILURE_FILE";

// Records that this process (a rank) is failing: the time now (CLOCK_MONOTONIC, which all processes
// of one machine share) and the first line of `what`. Call it from the top-level catch, and better
// still as soon as the failure is known, before communication is torn down, so that peers failing
// because of it report later. Only the first call of a process counts; a no-op when the variable
// is unset; never throws.
void report_rank_failure(const std::string& what) noexcept;

// The contents of a failure file: the time in nanoseconds, then the first line of the message.
struct FailureReport {
  std::int64_t time_ns = 0;
  std::string what;
};
std::string format_failure_report(const FailureReport& report);
std::optional<FailureReport> parse_failure_report(const std::string& text);  // nullopt if malformed

// A rank that failed on its own, as the launcher saw it: when it reported, if it did, and when
// the launcher reaped it (same clock). Listed in the order the launcher reaped them.
struct RankFailure {
  int rank = 0;
  std::optional<std::int64_t> reported_ns;
  std::int64_t reaped_ns = 0;
};

// The index in `failures` of the rank that failed first: the earliest failure time, which is the
// reported time or, for a rank that did not report, the time it was reaped; ties go to the earlier
// reaped. -1 when `failures` is empty. Pure.
int first_failure(const std::vector<RankFailure>& failures);

// With several nodes: when one of the failed ranks' reports (`reasons`, first failure first) says
// that it lost a peer on another node (peer_loss.h), "; rank K is on node N (ranks A to B): that
// node died, failed or cannot be reached"; otherwise "". Nodes hold `nproc` ranks each. Pure.
std::string remote_node_note(const std::vector<std::string>& reasons, int nnodes, int nproc, int node_rank);

}  // namespace tpipe
