// How a command that trains (tpipe train, and the next front doors) runs its ranks: the command
// starts them as workers of itself through the launcher, and rank 0 reports back in lines the
// command turns into a progress bar, notes and a summary:
//   PROGRESS {"step","steps","loss","rate","unit","elapsed"[,"val"]}   NOTE text   SUMMARY {...}
//   DOCTOR text (what a rank gets on this machine)
// The launcher prefixes each line with "[rank 0] ".
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tpipe/comm/communicator.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/doctor.h"
#include "tpipe/util/files.h"

namespace tpipe::cli {

// Worker side: what rank 0 prints for the command to read.
void report_progress(const nlohmann::json& progress);
void report_note(const std::string& text);  // one NOTE line per line of text
void report_summary(const nlohmann::json& summary);

// JSON text that stays valid when a string cuts a multi-byte character in two.
std::string dump(const nlohmann::json& j);
// A number the command reads back: not finite becomes null (JSON has no NaN), and back.
nlohmann::json number(double x);
double number(const nlohmann::json& j);

// Worker side: connects this rank (Communicator::from_env, `timeout_s` for every wait), has local
// rank 0 print the DOCTOR line, and runs `body`. A failure is reported to the launcher while the
// connections are still open, so the rank that failed first is blamed; a NonFiniteError (every
// rank stops at the same step) is said once, by rank 0, as "<command>: ..." and exits 1; LibTorch
// errors keep their first line unless TPIPE_DEBUG=1.
int run_worker_rank(const std::string& command, double timeout_s,
                    const std::function<int(Communicator&, const DoctorReport&)>& body);

// What a rank measured of the machine, as a JSON object for the run report (ReportOptions).
std::string machine_json(const DoctorReport& machine);

// Command side: starts the ranks of `lo`, shows rank 0's progress, notes and the DOCTOR line, passes
// every other line through, and fills `summary` from the SUMMARY line. Returns the exit code
// (having printed "<command>: <why>" when it is not 0).
int launch_worker_ranks(const std::string& command, const LaunchOptions& lo, nlohmann::json& summary);

// Command side: where a training command's ranks run when they span several machines, torchrun's
// way (run the command once per node with the same flags but --node-rank).
struct NodeFlags {
  int nnodes = 1, node_rank = 0;
  int nproc_per_node = 0;  // 0: the job's ranks / nnodes
  std::string master_addr = "127.0.0.1";
  int master_port = 0;     // 0: a free port (one node only)
};
void add_node_flags(CLI::App& app, NodeFlags& f);

// This node's part of a job of `ranks` ranks: the launch options (local ranks, node, master, and
// the BLAS kernel, threads and cores tune_local_ranks chose for the local ranks), checked before
// anything starts (ConfigError: ranks that do not fill the nodes, a node rank out of range, more
// local ranks than this machine runs). `tuning_line` says what was tuned.
LaunchOptions node_launch(const NodeFlags& f, int ranks, std::string& tuning_line);

// Command side, before any rank starts: a checkpoint to resume with a damaged file is a ConfigError
// (naming it), the run's directories (`out`, the checkpoint root unless "") are created, and `out`
// is locked so that one run at a time writes into it (the lock lasts as long as the result).
std::unique_ptr<DirectoryLock> prepare_run_directories(const std::string& command,
                                                       const std::optional<std::string>& resume,
                                                       const std::string& out, const std::string& checkpoint_root);

// Command side, in the summary: the measured peaks by rank (activations and all tensor memory),
// the largest and, for a few ranks, every rank's; `checkpoint` is the --checkpoint mode.
void print_memory(const std::vector<std::int64_t>& activations, const std::vector<std::int64_t>& memory,
                  const std::string& checkpoint);

// Command side, once the header is printed: prints "ranks: <tuning_line>", starts the ranks
// (launch_worker_ranks) and hands rank 0's SUMMARY to `print_summary`. Returns the exit code.
int run_training_command(const std::string& command, const LaunchOptions& lo, const std::string& tuning_line,
                         const std::function<void(const nlohmann::json&)>& print_summary);

struct RunFiles {
  std::string out, trace, timeline, metrics;  // as the flags: "" is OUT/<default name>, "-" none
};

// Command side, the end of the summary from the SUMMARY line's "bubble", "activation_peak_bytes",
// "memory_peak_bytes", "checkpoint", "skipped" and "last_step": the measured bubble, memory
// (print_memory), the files written, the last checkpoint, skipped steps, and how to continue a
// run that --stop-after ended before `steps`.
void print_run_end(const nlohmann::json& s, int steps, const std::string& checkpoint_mode, const RunFiles& files);

}  // namespace tpipe::cli
