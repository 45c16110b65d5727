// The local launcher behind `tpipe run`: forks one process per rank with torchrun's variables,
// relays their output line by line with a "[rank k] " prefix, and stops the whole job as soon as
// one rank fails, so that a crash on one rank never leaves the others blocked in a collective.
// Everything runs on the calling thread: one poll() loop over the ranks' pipes and a self-pipe
// that carries the signals the launcher receives.
#include "tpipe/launcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "launch_parts.h"
#include "tpipe/error.h"
#include "tpipe/ports.h"

extern char** environ;

namespace tpipe {
namespace {

using Clock = std::chrono::steady_clock;
using detail::FailureDir;
using detail::exit_code_of;
using detail::pump;
using detail::rank_list;
using detail::signal_text;
using detail::succeeded;
using detail::SignalGuard;
using detail::Stream;

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

struct Rank {
  int global = 0;
  pid_t pid = -1;
  bool running = false;
  int status = 0;
  Stream out, err;
  std::int64_t reaped_ns = 0;  // when the launcher reaped it
  int reap_order = -1;         // 0 for the first rank reaped, ...
  bool stopped = false;        // still running when the launcher started stopping the job
};

// The running ranks. The destructor kills and reaps any rank still running (after a fork failure
// or a sink that throws), so that no rank ever outlives launch().
class Job {
 public:
  Job(const LaunchOptions& o, int port, const LineSink& sink) : o_(o), sink_(sink), ranks_(o.nproc) {
    try {
      for (int local = 0; local < o.nproc; ++local) start(local, port);
    } catch (...) {
      kill_all();  // a constructor that throws gets no destructor call
      throw;
    }
  }
  ~Job() { kill_all(); }

  LaunchResult wait() {
    while (any_running()) {
      long long timeout_ms = 100;
      if (stopping_ && !killed_)
        timeout_ms = std::clamp<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(kill_at_ - Clock::now()).count() + 1, 0, 100);
      if (settling()) timeout_ms = 10;  // reports arrive as files, which do not wake poll()
      poll_once(static_cast<int>(timeout_ms));
      reap();
      if (settling() && settled()) stop(SIGTERM);
      if (stopping_ && !killed_ && Clock::now() >= kill_at_ && any_running()) {
        killed_ = true;
        signal_running(SIGKILL, false);
      }
    }
    // What the ranks wrote before exiting is still in the pipes. Drain it without waiting for EOF:
    // a background grandchild holding a pipe open must not keep the job alive.
    const auto until = Clock::now() + std::chrono::seconds(1);
    while (poll_once(0) && Clock::now() < until) {}
    for (Rank& r : ranks_)
      for (Stream* s : {&r.out, &r.err})
        if (!s->pending.empty()) sink_(s->prefix + std::exchange(s->pending, {}), s->is_stderr);
    return result();
  }

 private:
  void kill_all() noexcept {
    for (Rank& r : ranks_) {
      if (r.running) kill(-r.pid, SIGKILL);
      while (r.running && waitpid(r.pid, nullptr, 0) < 0 && errno == EINTR) {}
      r.running = false;
      for (Stream* s : {&r.out, &r.err})
        if (s->fd >= 0) close(s->fd);
      r.out.fd = r.err.fd = -1;
    }
  }

  // Everything the child needs is prepared before fork(): between fork and exec only
  // async-signal-safe calls are allowed, as the caller may have threads holding malloc's lock.
  void start(int local, int port) {
    Rank& rank = ranks_[local];
    rank.global = o_.node_rank * o_.nproc + local;
    std::vector<std::string> env_strings = environment(local, port), arg_strings = o_.command;
    std::vector<char*> env = c_strings(env_strings), args = c_strings(arg_strings);
    const std::string exec_failed = "cannot run '" + o_.command[0] + "': ";
    const std::string prefix = "[rank " + std::to_string(rank.global) + "] ";
    const pid_t launcher = getpid();

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0) throw Error(sys_error("cannot create a pipe"));
    rank.out = {out[0], false, prefix, {}};  // from here on, kill_all() closes the read ends
    if (pipe2(err, O_CLOEXEC) != 0) {
      const std::string error = sys_error("cannot create a pipe");
      close(out[1]);
      throw Error(error);
    }
    rank.err = {err[0], true, prefix, {}};

    // A rank in its own process group that reads the terminal would be stopped (SIGTTIN) and hang
    // the job; it reads /dev/null instead. Any other stdin (a pipe, a file) is passed on.
    const int null_in = isatty(STDIN_FILENO) ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    const bool bind = local < static_cast<int>(o_.cpus.size()) && !o_.cpus[local].empty();
    if (bind)
      for (int c : o_.cpus[local])
        if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &cpus);
    const pid_t pid = fork();
    if (pid == 0) {
      // Die with the launcher. The launcher may have died already, before this call: then the
      // child has been handed to another parent, and it goes at once.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != launcher) raise(SIGKILL);
      setpgid(0, 0);
      if (bind) sched_setaffinity(0, sizeof cpus, &cpus);  // best effort: a refusal leaves it unbound
      signals_.restore();
      if (null_in >= 0) dup2(null_in, STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      environ = env.data();
      execvp(args[0], args.data());
      const char* reason = std::strerror(errno);
      if (write(STDERR_FILENO, exec_failed.data(), exec_failed.size()) < 0 ||
          write(STDERR_FILENO, reason, std::strlen(reason)) < 0 || write(STDERR_FILENO, "\n", 1) < 0) {}
      _exit(127);
    }
    const int fork_errno = errno;
    close(out[1]);
    close(err[1]);
    if (null_in >= 0) close(null_in);
    if (pid < 0)
      throw Error("cannot start rank " + std::to_string(rank.global) + ": " + std::strerror(fork_errno));
    setpgid(pid, pid);  // the child does it too: whichever runs first, kill(-pid) works from now on
    rank.pid = pid;
    rank.running = true;
    fcntl(rank.out.fd, F_SETFL, O_NONBLOCK);
    fcntl(rank.err.fd, F_SETFL, O_NONBLOCK);
  }

  // The caller's environment with torchrun's variables and the options' own set (inherited values are
  // replaced).
  std::vector<std::string> environment(int local, int port) const {
    std::vector<std::string> vars = {
        "RANK=" + std::to_string(o_.node_rank * o_.nproc + local),
        "WORLD_SIZE=" + std::to_string(o_.nnodes * o_.nproc),
        "LOCAL_RANK=" + std::to_string(local),
        "LOCAL_WORLD_SIZE=" + std::to_string(o_.nproc),
        "GROUP_RANK=" + std::to_string(o_.node_rank),
        "MASTER_ADDR=" + o_.master_addr,
        "MASTER_PORT=" + std::to_string(port)};
    const std::string report_to = failure_dir_.path(o_.node_rank * o_.nproc + local);
    if (!report_to.empty()) vars.push_back(std::string(kFailureFileVariable) + "=" + report_to);
    for (const auto& [name, value] : o_.env) vars.push_back(name + "=" + value);
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      auto same_name = [&](const std::string& v) {
        const size_t n = v.find('=') + 1;
        return entry.compare(0, n, v, 0, n) == 0;
      };
      if (std::none_of(vars.begin(), vars.end(), same_name)) env.push_back(entry);
    }
    env.insert(env.end(), vars.begin(), vars.end());
    return env;
  }

  // Waits up to timeout_ms for output or a signal and handles both. Returns true if a rank's
  // stream was ready.
  bool poll_once(int timeout_ms) {
    std::vector<pollfd> fds = {{signals_.read_fd(), POLLIN, 0}};
    std::vector<Stream*> streams = {nullptr};
    for (Rank& r : ranks_)
      for (Stream* s : {&r.out, &r.err})
        if (s->fd >= 0) {
          fds.push_back({s->fd, POLLIN, 0});
          streams.push_back(s);
        }
    const int ready = poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) throw Error(sys_error("poll failed"));
    if (ready <= 0) return false;
    unsigned char sig;
    while ((fds[0].revents & POLLIN) && read(fds[0].fd, &sig, 1) == 1) {
      if (sig == SIGCHLD) continue;
      if (!stopping_) interrupted_by_ = sig;
      // While already stopping, a second Ctrl-C still reaches ranks that are cleaning up. A hangup
      // (the terminal went away) stops the ranks as SIGTERM does: they are not on that terminal.
      stop(sig == SIGHUP ? SIGTERM : sig);
    }
    bool any = false;
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0) {
        pump(*streams[i], sink_);
        any = true;
      }
    return any;
  }

  void reap() {
    for (Rank& r : ranks_) {
      const pid_t got = r.running ? waitpid(r.pid, &r.status, WNOHANG) : 0;
      if (got == 0 || (got < 0 && errno == EINTR)) continue;
      r.running = false;
      if (got < 0) r.status = 0;  // ECHILD: someone else reaped it, there is nothing more to learn
      r.reaped_ns = detail::monotonic_ns();
      r.reap_order = reaped_++;
      // The first failure starts the settle time (see LaunchOptions::settle); the others are
      // stopped when it ends.
      if (!succeeded(r.status) && !stopping_ && !settling()) first_failed_at_ = Clock::now();
      if (!succeeded(r.status) && !stopping_) any_failed_ = true;
    }
  }

  bool settling() const { return any_failed_ && !stopping_; }

  // The settle time is over when it has run out, or, after a short grace for reports still being
  // written, when no running rank has reported a failure it is still exiting from.
  bool settled() const {
    const auto waited = Clock::now() - first_failed_at_;
    if (waited >= o_.settle) return true;
    if (waited < std::min(o_.settle, std::chrono::milliseconds(50))) return false;
    return std::none_of(ranks_.begin(), ranks_.end(),
                        [&](const Rank& r) { return r.running && failure_dir_.read(r.global).has_value(); });
  }

  // The first call starts stopping the job: it records who was stopped and when SIGKILL is due.
  void stop(int sig) {
    if (stopping_) return signal_running(sig, false);
    stopping_ = true;
    stopped_ns_ = detail::monotonic_ns();
    kill_at_ = Clock::now() + o_.grace;
    signal_running(sig, true);
  }

  // Signals whole process groups, so that whatever a rank started goes down with it.
  void signal_running(int sig, bool first_stop) {
    for (Rank& r : ranks_)
      if (r.running) {
        kill(-r.pid, sig);
        if (first_stop) r.stopped = true;
        if (sig == SIGKILL && killed_) needed_kill_.push_back(r.global);
      }
  }

  bool any_running() const {
    return std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
  }

  // The ranks that failed on their own, in the order they were reaped: those that exited with an
  // error before the job was stopped, and those that were stopped after reporting a failure.
  std::vector<const Rank*> own_failures() const {
    std::vector<const Rank*> out;
    for (const Rank& r : ranks_) {
      if (succeeded(r.status)) continue;
      if (!r.stopped) {
        out.push_back(&r);
      } else if (const auto report = failure_dir_.read(r.global); report && report->time_ns < stopped_ns_) {
        out.push_back(&r);
      }
    }
    std::sort(out.begin(), out.end(), [](const Rank* a, const Rank* b) { return a->reap_order < b->reap_order; });
    return out;
  }

  LaunchResult result() const {
    LaunchResult res;
    const std::vector<const Rank*> failed = own_failures();
    std::vector<RankFailure> times;
    for (const Rank* r : failed) {
      const auto report = failure_dir_.read(r->global);
      times.push_back({r->global, report ? std::optional(report->time_ns) : std::nullopt, r->reaped_ns});
    }
    std::vector<int> after, stopped;
    if (!failed.empty()) {
      const Rank& first = *failed[first_failure(times)];
      const int st = first.status;
      res.failed_rank = first.global;
      res.exit_code = exit_code_of(st);
      if (const auto report = failure_dir_.read(first.global)) res.reason = report->what;
      for (const Rank* r : failed)
        if (r != &first) after.push_back(r->global);
      if (after.empty()) {
        res.message = "rank " + std::to_string(first.global) +
                      (WIFSIGNALED(st) ? " was killed by " + signal_text(WTERMSIG(st))
                                       : " exited with status " + std::to_string(res.exit_code));
      } else {
        res.message = "rank " + std::to_string(first.global) + " failed first (" +
                      (WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st)) + ", " + strsignal(WTERMSIG(st))
                                       : "exit status " + std::to_string(res.exit_code)) +
                      "); " + (after.size() == 1 ? "rank " : "ranks ") + rank_list(after) + " failed after it";
      }
      std::vector<std::string> reasons{res.reason};
      for (const Rank* r : failed)
        if (const auto report = failure_dir_.read(r->global); report && r != &first) reasons.push_back(report->what);
      res.message += remote_node_note(reasons, o_.nnodes, o_.nproc, o_.node_rank);
    } else if (interrupted_by_ != 0) {
      res.exit_code = 128 + interrupted_by_;
      res.message = "interrupted by " + signal_text(interrupted_by_);
    } else {
      res.message = o_.nproc == 1 ? "1 rank exited 0" : "all " + std::to_string(o_.nproc) + " ranks exited 0";
    }
    for (const Rank& r : ranks_)
      if (r.stopped && std::find(failed.begin(), failed.end(), &r) == failed.end()) stopped.push_back(r.global);
    if (!stopped.empty()) res.message += "; stopped ranks " + rank_list(stopped);
    if (!needed_kill_.empty())
      res.message += " (SIGKILL after " + std::to_string(o_.grace.count()) + " ms: " + rank_list(needed_kill_) + ")";
    return res;
  }

  const LaunchOptions& o_;
  const LineSink& sink_;
  SignalGuard signals_;  // before the ranks: the handlers must be in place when the first one starts
  FailureDir failure_dir_;  // before the ranks too: their environment names it
  std::vector<Rank> ranks_;
  bool stopping_ = false, killed_ = false, any_failed_ = false;
  Clock::time_point kill_at_, first_failed_at_;
  std::int64_t stopped_ns_ = 0;
  int reaped_ = 0;
  int interrupted_by_ = 0;
  std::vector<int> needed_kill_;
};

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

void validate(const LaunchOptions& o) {
  check_launch_size(o.nproc, o.nnodes, o.node_rank, usable_cores());
  require(!o.command.empty() && !o.command[0].empty(),
          "no program to run: give it after '--', e.g. tpipe run -n 2 -- ./train");
  require(!o.master_addr.empty(), "--master-addr must not be empty");
  require(o.master_port >= 0 && o.master_port <= 65535,
          "--master-port must be in [0, 65535], got " + std::to_string(o.master_port));
  require(o.master_port != 0 || o.nnodes == 1, "--master-port is required with --nnodes > 1");
}

}  // namespace

LaunchResult launch(const LaunchOptions& options, const LineSink& sink) {
  validate(options);
  int port = options.master_port;
  if (port == 0) {
    port = free_port(options.master_addr);
  } else if (options.node_rank == 0 && port_in_use(options.master_addr, port)) {
    throw ConfigError("port " + std::to_string(port) + " on " + options.master_addr + " is in use; " +
                      (options.nnodes == 1 ? "pass --master-port 0 to pick a free one"
                                           : "pick another --master-port on every node"));
  }
  Job job(options, port, sink);
  return job.wait();
}

}  // namespace tpipe
