// How a command that trains (tpipe train, and the next front doors) runs its ranks: the command
// starts them as workers of itself through the launcher, and rank 0 reports back in lines the
// command turns into a progress bar, notes and a summary:
//   PROGRESS {"step","steps","loss","tok_s","elapsed"[,"val"]}   NOTE text   SUMMARY {...}
//   DOCTOR text (what a rank gets on this machine)
// The launcher prefixes each line with "[rank 0] ".
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "tpipe/comm/communicator.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/doctor.h"

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

// Command side: starts the ranks of `lo`, shows rank 0's progress, notes and the DOCTOR line, passes
// every other line through, and fills `summary` from the SUMMARY line. Returns the exit code
// (having printed "<command>: <why>" when it is not 0).
int launch_worker_ranks(const std::string& command, const LaunchOptions& lo, nlohmann::json& summary);

}  // namespace tpipe::cli
