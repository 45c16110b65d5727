// The relay of a rank's output, the failure-report directory, the launcher's signals and the words
// for how a rank ended (see launch_parts.h).
#include "launch_parts.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "tpipe/error.h"

namespace tpipe::detail {
namespace {

// A signal handler can reach nothing but static storage, so the write end of the self-pipe lives
// here, set only while launch() runs. It is the reason two launches must not overlap in time.
volatile std::sig_atomic_t signal_pipe_fd = -1;

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  if (write(signal_pipe_fd, &byte, 1) < 0) {}  // a full pipe already holds a wake-up
  errno = saved;
}

}  // namespace

SignalGuard::SignalGuard() {
  if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw Error(std::string("cannot create a pipe: ") + std::strerror(errno));
  signal_pipe_fd = fds_[1];
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < kCount; ++i) {
    sigaction(kSignals[i], nullptr, &old_[i]);
    // By convention a signal the caller ignores stays ignored (a script's background job ignores
    // SIGINT); SIGCHLD is the exception, see launch_parts.h.
    if (kSignals[i] == SIGCHLD || old_[i].sa_handler != SIG_IGN) sigaction(kSignals[i], &sa, nullptr);
  }
}

SignalGuard::~SignalGuard() {
  restore();
  signal_pipe_fd = -1;
  close(fds_[0]);
  close(fds_[1]);
}

std::int64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

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

FailureDir::FailureDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tpipe-launch-XXXXXX";
  if (mkdtemp(templ.data()) != nullptr) dir_ = templ;
}

FailureDir::~FailureDir() {
  if (dir_.empty()) return;
  if (DIR* d = opendir(dir_.c_str())) {
    while (const dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        unlink((dir_ + "/" + e->d_name).c_str());
    closedir(d);
  }
  rmdir(dir_.c_str());
}

std::optional<FailureReport> FailureDir::read(int rank) const {
  if (dir_.empty()) return std::nullopt;
  const int fd = open(path(rank).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < 65536;) text.append(buf, n);
  close(fd);
  return parse_failure_report(text);
}

bool succeeded(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

int exit_code_of(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

std::string signal_text(int sig) { return "signal " + std::to_string(sig) + " (" + strsignal(sig) + ")"; }

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

}  // namespace tpipe::detail
