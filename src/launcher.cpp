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

#include "tpipe/error.h"
#include "tpipe/ports.h"

extern char** environ;

namespace tpipe {
namespace {

using Clock = std::chrono::steady_clock;

// A signal handler can reach nothing but static storage, so the write end of the self-pipe lives
// here, set only while launch() runs. It is the reason two launches must not overlap in time.
volatile std::sig_atomic_t signal_pipe_fd = -1;

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  if (write(signal_pipe_fd, &byte, 1) < 0) {}  // a full pipe already holds a wake-up
  errno = saved;
}

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

// The clock of failure reports: CLOCK_MONOTONIC is one clock for all processes of a machine and
// does not jump when the wall clock is set.
std::int64_t now_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// The temporary directory where each rank may leave its failure report (report_rank_failure),
// removed with everything in it when the launch ends. Best effort: where no directory can be
// made, ranks get no variable and blame falls back to the order in which ranks were reaped.
class FailureDir {
 public:
  FailureDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tpipe-launch-XXXXXX";
    if (mkdtemp(templ.data()) != nullptr) dir_ = templ;
  }
  ~FailureDir() {
    if (dir_.empty()) return;
    if (DIR* d = opendir(dir_.c_str())) {
      while (const dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          unlink((dir_ + "/" + e->d_name).c_str());
      closedir(d);
    }
    rmdir(dir_.c_str());
  }
  FailureDir(const FailureDir&) = delete;
  FailureDir& operator=(const FailureDir&) = delete;

  // "" when there is no directory.
  std::string path(int rank) const { return dir_.empty() ? "" : dir_ + "/rank-" + std::to_string(rank); }

  std::optional<FailureReport> read(int rank) const {
    if (dir_.empty()) return std::nullopt;
    const int fd = open(path(rank).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < 65536;) text.append(buf, n);
    close(fd);
    return parse_failure_report(text);
  }

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

  SignalGuard() {
    if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) throw Error(sys_error("cannot create a pipe"));
    signal_pipe_fd = fds_[1];
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < kCount; ++i) {
      sigaction(kSignals[i], nullptr, &old_[i]);
      // By convention a signal the caller ignores stays ignored (a script's background job ignores
      // SIGINT); SIGCHLD is the exception, see above.
      if (kSignals[i] == SIGCHLD || old_[i].sa_handler != SIG_IGN) sigaction(kSignals[i], &sa, nullptr);
    }
  }
  ~SignalGuard() {
    restore();
    signal_pipe_fd = -1;
    close(fds_[0]);
    close(fds_[1]);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  // Async-signal-safe, so a forked child can call it to start with the caller's handlers.
  void restore() const { for (int i = 0; i < kCount; ++i) sigaction(kSignals[i], &old_[i], nullptr); }
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_[kCount] {};
};

// One output stream of one rank; a partial line waits in `pending` for its newline or EOF.
struct Stream {
  int fd = -1;
  bool is_stderr = false;
  std::string prefix;  // "[rank k] "
  std::string pending;
};

// Reads what is available and hands complete lines to the sink; at EOF, the partial line too.
void pump(Stream& s, const LineSink& sink) {
  char buf[65536];
  ssize_t n;
  while ((n = read(s.fd, buf, sizeof buf)) < 0 && errno == EINTR) {}
  if (n < 0 && errno == EAGAIN) return;
  if (n > 0) {
    s.pending.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = s.pending.find('\n', start)) != std::string::npos; start = nl + 1)
      sink(s.prefix + s.pending.substr(start, nl - start), s.is_stderr);
    s.pending.erase(0, start);
    // A program that only ever writes '\r' (a progress bar) must not grow this without bound.
    if (s.pending.size() < (1u << 20)) return;
  }
  if (!s.pending.empty()) sink(s.prefix + s.pending, s.is_stderr);
  s.pending.clear();
  if (n > 0) return;
  close(s.fd);
  s.fd = -1;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

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

bool succeeded(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

int exit_code_of(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

std::string signal_text(int sig) { return "signal " + std::to_string(sig) + " (" + strsignal(sig) + ")"; }

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
      r.reaped_ns = now_ns();
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
    stopped_ns_ = now_ns();
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

std::string format_failure_report(const FailureReport& report) {
  return std::to_string(report.time_ns) + "\n" + report.what + "\n";
}

std::optional<FailureReport> parse_failure_report(const std::string& text) {
  const size_t nl = text.find('\n');
  if (nl == std::string::npos || nl == 0 || nl > 19) return std::nullopt;
  FailureReport report;
  for (size_t i = 0; i < nl; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    const int digit = text[i] - '0';
    if (report.time_ns > (INT64_MAX - digit) / 10) return std::nullopt;  // more than an int64 holds
    report.time_ns = report.time_ns * 10 + digit;
  }
  const size_t end = text.find('\n', nl + 1);
  if (end == std::string::npos) return std::nullopt;  // a report always ends with a newline
  report.what = text.substr(nl + 1, end - nl - 1);
  return report;
}

void report_rank_failure(const std::string& what) noexcept {
  static std::atomic<bool> reported{false};
  const char* path = std::getenv(kFailureFileVariable);
  if (path == nullptr || *path == '\0' || reported.exchange(true)) return;
  try {
    std::string line = what.substr(0, what.find('\n'));
    if (line.size() > 1000) line.resize(1000);
    const std::string text = format_failure_report({now_ns(), line});
    // Written aside, then linked into place: the launcher never reads half a report, and where a
    // report is already in place (another process of this rank), link() fails and the first stays.
    const std::string aside = std::string(path) + "." + std::to_string(getpid());
    const int fd = open(aside.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    close(fd);
    if (written && link(aside.c_str(), path) != 0) {}
    unlink(aside.c_str());
  } catch (...) {
    // Out of memory while failing: the launcher falls back to the order it reaped the ranks in.
  }
}

int first_failure(const std::vector<RankFailure>& failures) {
  int best = -1;
  std::int64_t best_ns = 0;
  for (size_t i = 0; i < failures.size(); ++i) {
    const std::int64_t t = failures[i].reported_ns.value_or(failures[i].reaped_ns);
    if (best < 0 || t < best_ns) {
      best = static_cast<int>(i);
      best_ns = t;
    }
  }
  return best;
}

}  // namespace tpipe
