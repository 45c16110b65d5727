// Private to the launcher (launcher.cpp): the parts of a launch that are not the job itself: how a
// rank's end is told, the relay of a rank's output lines, the directory where ranks leave their
// failure reports, and the signals the launcher catches while it runs.
#pragma once

#include <signal.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tpipe/launcher.h"

namespace tpipe::detail {

// The clock of failure reports: CLOCK_MONOTONIC is one clock for all processes of a machine and
// does not jump when the wall clock is set.
std::int64_t monotonic_ns();

// How a rank's end is told: a wait status that is success, the exit code the job takes from it
// (128 + signal when killed), "signal 9 (Killed)", and "0, 2, 3".
bool succeeded(int status);
int exit_code_of(int status);
std::string signal_text(int sig);
std::string rank_list(const std::vector<int>& ranks);

// One output stream of one rank; a partial line waits in `pending` for its newline or EOF.
struct Stream {
  int fd = -1;
  bool is_stderr = false;
  std::string prefix;  // "[rank k] "
  std::string pending;
};

// Reads what is available and hands complete lines to the sink; at EOF, the partial line too.
void pump(Stream& s, const LineSink& sink);

// The temporary directory where each rank may leave its failure report (report_rank_failure),
// removed with everything in it when the launch ends. Best effort: where no directory can be
// made, ranks get no variable and blame falls back to the order in which ranks were reaped.
class FailureDir {
 public:
  FailureDir();
  ~FailureDir();
  FailureDir(const FailureDir&) = delete;
  FailureDir& operator=(const FailureDir&) = delete;

  // "" when there is no directory.
  std::string path(int rank) const { return dir_.empty() ? "" : dir_ + "/rank-" + std::to_string(rank); }
  std::optional<FailureReport> read(int rank) const;

 private:
  std::string dir_;
};

// Catches SIGINT/SIGTERM/SIGHUP (to stop the ranks) for the duration of launch() and puts the
// caller's handlers back afterwards. SIGCHLD is caught too: it wakes the poll loop as soon as a rank
// exits, and it overrides an inherited SIG_IGN, which would let the kernel reap the ranks before
// waitpid.
class SignalGuard {
 public:
  static constexpr int kCount = 4;
  static constexpr int kSignals[kCount] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};

  SignalGuard();
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  // Async-signal-safe, so a forked child can call it to start with the caller's handlers.
  void restore() const { for (int i = 0; i < kCount; ++i) sigaction(kSignals[i], &old_[i], nullptr); }
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_[kCount] {};
};

}  // namespace tpipe::detail
