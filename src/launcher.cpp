// The local launcher behind `tpipe run`: forks one process per rank with torchrun's variables,
// relays their output line by line with a "[rank k] " prefix, and stops the whole job as soon as
// one rank fails, so that a crash on one rank never leaves the others blocked in a collective.
// Everything runs on the calling thread: one poll() loop over the ranks' pipes and a self-pipe
// that carries the signals the launcher receives.
#include "tpipe/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
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

// Catches SIGINT/SIGTERM (to forward them) for the duration of launch() and puts the caller's
// handlers back afterwards. SIGCHLD is caught too: it wakes the poll loop as soon as a rank exits,
// and it overrides an inherited SIG_IGN, which would let the kernel reap the ranks before waitpid.
class SignalGuard {
 public:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGCHLD};

  SignalGuard() {
    if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) throw Error(sys_error("cannot create a pipe"));
    signal_pipe_fd = fds_[1];
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i) {
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
  void restore() const { for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &old_[i], nullptr); }
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_[3] {};
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
      poll_once(static_cast<int>(timeout_ms));
      reap();
      if (stopping_ && !killed_ && Clock::now() >= kill_at_ && any_running()) {
        killed_ = true;
        signal_running(SIGKILL, &needed_kill_);
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
      stop(sig);  // while already stopping, a second Ctrl-C still reaches ranks that are cleaning up
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
      r.running = false;  // got < 0 (ECHILD): someone else reaped it, there is nothing more to learn
      if (got > 0 && !(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) && !stopping_) {
        failed_ = &r;
        stop(SIGTERM);
      }
    }
  }

  // The first call starts stopping the job: it records who was stopped and when SIGKILL is due.
  void stop(int sig) {
    if (stopping_) return signal_running(sig, nullptr);
    stopping_ = true;
    kill_at_ = Clock::now() + o_.grace;
    signal_running(sig, &stopped_);
  }

  // Signals whole process groups, so that whatever a rank started goes down with it.
  void signal_running(int sig, std::vector<int>* which) {
    for (Rank& r : ranks_)
      if (r.running) {
        kill(-r.pid, sig);
        if (which) which->push_back(r.global);
      }
  }

  bool any_running() const {
    return std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
  }

  LaunchResult result() const {
    LaunchResult res;
    auto signal_text = [](int sig) { return "signal " + std::to_string(sig) + " (" + strsignal(sig) + ")"; };
    if (failed_ != nullptr) {
      const int st = failed_->status;
      res.failed_rank = failed_->global;
      res.exit_code = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
      res.message = "rank " + std::to_string(failed_->global) +
                    (WIFSIGNALED(st) ? " was killed by " + signal_text(WTERMSIG(st))
                                     : " exited with status " + std::to_string(res.exit_code));
    } else if (interrupted_by_ != 0) {
      res.exit_code = 128 + interrupted_by_;
      res.message = "interrupted by " + signal_text(interrupted_by_);
    } else {
      res.message = o_.nproc == 1 ? "1 rank exited 0" : "all " + std::to_string(o_.nproc) + " ranks exited 0";
    }
    if (!stopped_.empty()) res.message += "; stopped ranks " + rank_list(stopped_);
    if (!needed_kill_.empty())
      res.message += " (SIGKILL after " + std::to_string(o_.grace.count()) + " ms: " + rank_list(needed_kill_) + ")";
    return res;
  }

  const LaunchOptions& o_;
  const LineSink& sink_;
  SignalGuard signals_;  // before the ranks: the handlers must be in place when the first one starts
  std::vector<Rank> ranks_;
  bool stopping_ = false, killed_ = false;
  Clock::time_point kill_at_;
  const Rank* failed_ = nullptr;
  int interrupted_by_ = 0;
  std::vector<int> stopped_, needed_kill_;
};

void validate(const LaunchOptions& o) {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw ConfigError(message);
  };
  require(o.nproc >= 1, "--nproc-per-node must be at least 1, got " + std::to_string(o.nproc));
  require(!o.command.empty() && !o.command[0].empty(),
          "no program to run: give it after '--', e.g. tpipe run -n 2 -- ./train");
  require(o.nnodes >= 1, "--nnodes must be at least 1, got " + std::to_string(o.nnodes));
  require(o.node_rank >= 0 && o.node_rank < o.nnodes,
          "--node-rank must be in [0, " + std::to_string(o.nnodes - 1) + "] with --nnodes " +
              std::to_string(o.nnodes) + ", got " + std::to_string(o.node_rank));
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
