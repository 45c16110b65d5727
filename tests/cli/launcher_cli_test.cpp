// The launcher's drills through the real `tpipe run` process: ranks die with their launcher
// (SIGKILL, SIGHUP, SIGTERM to tpipe run), the rank that failed first is blamed even when a peer
// that failed because of it is reaped first, and jobs the machine cannot start are refused.
// The ranks are tests/cli/launcher_rank.cpp (LAUNCHER_RANK_BIN).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "temp_dir.h"
#include "tpipe/launcher.h"

namespace {

using Clock = std::chrono::steady_clock;
using tpipe::testing::TempDir;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t.substr(t.rfind('\n') == std::string::npos ? 0 : t.rfind('\n') + 1);
}

// `tpipe ARGS...` started in the background, its output going to files in `dir`.
struct Tpipe {
  pid_t pid = -1;
  std::string out, err;

  Tpipe(const std::string& dir, const std::vector<std::string>& args, const std::string& name = "tpipe")
      : out(dir + "/" + name + ".out"), err(dir + "/" + name + ".err") {
    std::vector<std::string> argv_strings = {TPIPE_BIN};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    pid = fork();
    if (pid == 0) {
      // The launcher keeps ignored signals ignored; this test sends them, so they must not be.
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }

  // The exit code, or 128 + signal.
  int wait() {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  }
  std::string stdout_text() const { return read_file(out); }
  std::string stderr_text() const { return read_file(err); }
};

// The pid a rank wrote to DIR/pid-RANK, waiting for it up to `limit`; -1 if it never came.
pid_t rank_pid(const std::string& dir, int rank, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = Clock::now() + limit;
  for (; Clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(5))) {
    const std::string text = read_file(dir + "/pid-" + std::to_string(rank));
    if (!text.empty() && text.back() == '\n') return std::stoi(text);
  }
  return -1;
}

// True when the process is gone: no such pid, or a zombie whose new parent (init in a container)
// has not reaped it yet; a zombie runs nothing.
bool gone(pid_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X');
}

// Waits up to `limit` for every pid to be gone; returns the seconds it took, or -1.
double seconds_until_gone(const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  const auto start = Clock::now();
  while (!std::all_of(pids.begin(), pids.end(), gone)) {
    if (Clock::now() - start > limit) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return seconds_since(start);
}

// Starts `tpipe run -n 2 -- launcher_rank sleep DIR [stubborn]` and returns it once both ranks run.
struct SleepingJob {
  Tpipe run;
  std::vector<pid_t> ranks;
  SleepingJob(const std::string& dir, bool stubborn)
      : run(dir, stubborn ? std::vector<std::string>{"run", "-n", "2", "--", LAUNCHER_RANK_BIN, "sleep", dir, "stubborn"}
                          : std::vector<std::string>{"run", "-n", "2", "--", LAUNCHER_RANK_BIN, "sleep", dir}) {
    for (int r = 0; r < 2; ++r) ranks.push_back(rank_pid(dir, r));
  }
  ~SleepingJob() {  // whatever happened, leave nothing running
    for (pid_t p : ranks)
      if (p > 0) kill(p, SIGKILL);
  }
};

TEST(LauncherCli, OrphanDrillRanksDieWhenTpipeRunIsKilled) {
  const TempDir dir("launcher_orphan");
  SleepingJob job(dir.path, /*stubborn=*/true);  // ignoring SIGTERM and SIGHUP changes nothing
  ASSERT_GT(job.ranks[0], 0) << job.run.stderr_text();
  ASSERT_GT(job.ranks[1], 0) << job.run.stderr_text();
  ASSERT_FALSE(gone(job.ranks[0]));
  ASSERT_EQ(kill(job.run.pid, SIGKILL), 0);
  EXPECT_EQ(job.run.wait(), 128 + SIGKILL);
  const double took = seconds_until_gone(job.ranks, std::chrono::seconds(2));
  EXPECT_GE(took, 0.0) << "a rank survived tpipe run by 2 s";
  std::printf("ranks gone %.3f s after SIGKILL to tpipe run\n", took);
}

// SIGHUP and SIGTERM to tpipe run stop the ranks (with SIGTERM) and end it with 128 + signal.
void expect_signal_stops_job(int sig, const std::string& message) {
  const TempDir dir("launcher_signal");
  SleepingJob job(dir.path, /*stubborn=*/false);
  ASSERT_GT(job.ranks[0], 0) << job.run.stderr_text();
  ASSERT_GT(job.ranks[1], 0) << job.run.stderr_text();
  const auto start = Clock::now();
  ASSERT_EQ(kill(job.run.pid, sig), 0);
  EXPECT_EQ(job.run.wait(), 128 + sig);
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_EQ(last_line(job.run.stderr_text()), "tpipe run: " + message);
  EXPECT_GE(seconds_until_gone(job.ranks, std::chrono::seconds(2)), 0.0);
}

TEST(LauncherCli, SighupStopsEveryRank) {
  expect_signal_stops_job(SIGHUP, "interrupted by signal 1 (Hangup); stopped ranks 0, 1");
}

TEST(LauncherCli, SigtermStopsEveryRank) {
  expect_signal_stops_job(SIGTERM, "interrupted by signal 15 (Terminated); stopped ranks 0, 1");
}

// Rank 1 fails; rank 0, its peer, fails about 1 ms later because of it and, when rank 1 takes its
// time to exit, is reaped first. Half the runs let rank 1 exit at once (then the reap order is a
// race), half let it take 100 ms (then rank 0 is always reaped first, and a launcher that blamed
// the first reaped would name it every time). `teardown_ms` picks which.
void expect_rank1_blamed(const std::string& last_line, bool slow) {
  if (slow) {
    EXPECT_EQ(last_line, "tpipe run: rank 1 failed first (exit status 1); rank 0 failed after it; stopped ranks 2");
  } else {
    EXPECT_EQ(last_line.rfind("tpipe run: rank 1 ", 0), 0u) << last_line;
  }
}

// The drill's 20 runs go through tpipe::launch, the function behind tpipe run, in this process:
// a tpipe process takes most of a second just to load LibTorch. tpipe run prints the result's
// message after "tpipe run: ", which the test below checks with the real command.
TEST(LauncherCli, BlameDrillNamesTheRankThatFailedFirst) {
  const auto start = Clock::now();
  int named = 0;
  for (int run = 0; run < 20; ++run) {
    const TempDir dir("launcher_blame");
    const bool slow = run % 2 == 1;
    tpipe::LaunchOptions o;
    o.nproc = 3;
    o.command = {LAUNCHER_RANK_BIN, "blame", dir.path, slow ? "100" : "0"};
    std::string rank1_error;
    const tpipe::LaunchResult r = tpipe::launch(o, [&](const std::string& line, bool is_stderr) {
      if (line.rfind("[rank 1] ", 0) == 0) rank1_error = line;
    });
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.failed_rank, 1);
    EXPECT_EQ(r.reason, "rank 1: the batch does not fit");
    EXPECT_EQ(rank1_error, "[rank 1] error: rank 1: the batch does not fit");
    expect_rank1_blamed("tpipe run: " + r.message, slow);
    named += r.failed_rank == 1;
  }
  EXPECT_EQ(named, 20);
  std::printf("rank 1 named in %d of 20 runs, %.2f s in all\n", named, seconds_since(start));
}

TEST(LauncherCli, BlameDrillThroughTpipeRun) {
  for (const bool slow : {false, true}) {
    const TempDir dir("launcher_blame");
    Tpipe job(dir.path, {"run", "-n", "3", "--", LAUNCHER_RANK_BIN, "blame", dir.path, slow ? "100" : "0"});
    EXPECT_EQ(job.wait(), 1) << job.stderr_text();
    const std::string err = job.stderr_text();
    EXPECT_NE(err.find("[rank 1] error: rank 1: the batch does not fit\n"), std::string::npos) << err;
    expect_rank1_blamed(last_line(err), slow);
  }
}

// tpipe itself reports a failure when it is a rank (as tpipe train's workers are): here a nested
// `tpipe run -n 0` fails in rank 1, whose shell then lingers; rank 0 fails once the report exists.
TEST(LauncherCli, TpipeAsARankReportsItsFailure) {
  const TempDir dir("launcher_report");
  const std::string script = std::string("if [ $RANK = 1 ]; then ") + TPIPE_BIN +
                             " run -n 0 -- true; sleep 0.2; exit 1; fi; "
                             "while [ ! -e \"$(dirname \"$TPIPE_FAILURE_FILE\")/rank-1\" ]; do sleep 0.01; done; exit 2";
  Tpipe job(dir.path, {"run", "-n", "2", "--", "/bin/sh", "-c", script});
  EXPECT_EQ(job.wait(), 1);
  const std::string err = job.stderr_text();
  EXPECT_NE(err.find("[rank 1] tpipe run: --nproc-per-node must be at least 1, got 0\n"), std::string::npos) << err;
  EXPECT_EQ(last_line(err), "tpipe run: rank 1 failed first (exit status 1); rank 0 failed after it");
}

int cores() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

// `tpipe run ARGS -- true`: the exit code and all of stderr.
std::pair<int, std::string> refused(const std::vector<std::string>& args) {
  const TempDir dir("launcher_limits");
  std::vector<std::string> all = {"run"};
  all.insert(all.end(), args.begin(), args.end());
  all.insert(all.end(), {"--", "true"});
  Tpipe job(dir.path, all);
  const int code = job.wait();
  return {code, job.stderr_text()};
}

TEST(LauncherCli, RefusesMoreRanksThanThisMachineCanRun) {
  const int c = cores(), most = std::min(8 * c, 256);
  const std::string why = most == 256 ? "the limit for one machine"
                                      : "8 per core on " + std::to_string(c) + (c == 1 ? " core" : " cores");
  const auto start = Clock::now();
  const auto [code, err] = refused({"-n", "100000"});
  EXPECT_EQ(code, 1);
  // One line, and before the tuning line: nothing was prepared, let alone forked.
  EXPECT_EQ(err, "tpipe run: cannot start 100000 ranks on this machine: at most " + std::to_string(most) + " (" + why +
                     ")\n");
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_EQ(refused({"-n", std::to_string(most + 1)}).second,
            "tpipe run: cannot start " + std::to_string(most + 1) + " ranks on this machine: at most " +
                std::to_string(most) + " (" + why + ")\n");
}

TEST(LauncherCli, RefusesJobSizesThatOverflowAndNodeRanksOutOfRange) {
  EXPECT_EQ(refused({"-n", "2", "--nnodes", "2147483647", "--master-port", "29555"}),
            (std::pair<int, std::string>{1, "tpipe run: --nnodes 2147483647 x 2 ranks per node = 4294967294 ranks, more "
                                            "than a job can have (at most 2147483647)\n"}));
  EXPECT_EQ(refused({"-n", "1", "--nnodes", "3", "--node-rank", "3", "--master-port", "29555"}),
            (std::pair<int, std::string>{1, "tpipe run: --node-rank must be in [0, 2] with --nnodes 3, got 3\n"}));
  EXPECT_EQ(refused({"-n", "0"}),
            (std::pair<int, std::string>{1, "tpipe run: --nproc-per-node must be at least 1, got 0\n"}));
}

}  // namespace
