// Tests of the local launcher with real processes (/bin/sh -c ...): the variables each rank sees,
// the prefixed output of both streams, and how one failing rank ends the whole job.
#include "tpipe/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tpipe/error.h"

namespace tpipe {
namespace {

using Lines = std::vector<std::pair<bool, std::string>>;  // (is_stderr, line)

struct Outcome {
  LaunchResult result;
  Lines lines;  // sorted: the order across ranks is not deterministic
  double seconds = 0;
};

LaunchOptions shell(int nproc, const std::string& script) {
  LaunchOptions o;
  o.nproc = nproc;
  o.command = {"/bin/sh", "-c", script};
  return o;
}

Outcome run(const LaunchOptions& options) {
  Outcome r;
  const auto start = std::chrono::steady_clock::now();
  r.result = launch(options, [&](const std::string& line, bool is_stderr) { r.lines.emplace_back(is_stderr, line); });
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(r.lines.begin(), r.lines.end());
  return r;
}

// A socket bound (and listening, if asked) on 127.0.0.1 at a port the kernel chose.
struct Socket {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int port = 0;
  explicit Socket(bool listening) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    if (listening) {
      EXPECT_EQ(listen(fd, 1), 0);
    }
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
  }
  ~Socket() { close(fd); }
};

TEST(Launcher, SetsTorchrunVariablesForEachRank) {
  const Outcome r =
      run(shell(3, "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $GROUP_RANK $MASTER_ADDR $MASTER_PORT"));
  ASSERT_EQ(r.result.exit_code, 0) << r.result.message;
  ASSERT_EQ(r.lines.size(), 3u);
  const std::string port = r.lines[0].second.substr(r.lines[0].second.rfind(' ') + 1);
  EXPECT_GT(std::stoi(port), 0) << "MASTER_PORT 0 must be replaced by a free port";
  const Lines expected = {{false, "[rank 0] 0 3 0 3 0 127.0.0.1 " + port},
                          {false, "[rank 1] 1 3 1 3 0 127.0.0.1 " + port},
                          {false, "[rank 2] 2 3 2 3 0 127.0.0.1 " + port}};
  EXPECT_EQ(r.lines, expected);
}

TEST(Launcher, NumbersRanksGloballyOnSecondNode) {
  LaunchOptions o = shell(2, "echo $RANK $WORLD_SIZE $LOCAL_RANK $GROUP_RANK $MASTER_ADDR $MASTER_PORT");
  o.nnodes = 2;
  o.node_rank = 1;
  o.master_addr = "10.1.2.3";  // another machine's address: node 1 does not check the port
  o.master_port = 29555;
  const Outcome r = run(o);
  ASSERT_EQ(r.result.exit_code, 0) << r.result.message;
  const Lines expected = {{false, "[rank 2] 2 4 0 1 10.1.2.3 29555"}, {false, "[rank 3] 3 4 1 1 10.1.2.3 29555"}};
  EXPECT_EQ(r.lines, expected);
}

TEST(Launcher, ReplacesInheritedVariables) {
  setenv("RANK", "99", 1);
  const Outcome r = run(shell(1, "echo $RANK"));
  unsetenv("RANK");
  EXPECT_EQ(r.lines, (Lines{{false, "[rank 0] 0"}}));
}

TEST(Launcher, PrefixesLinesOfBothStreams) {
  const Outcome r = run(shell(2, "echo out one; echo err one >&2; echo out two; echo err two >&2"));
  ASSERT_EQ(r.result.exit_code, 0) << r.result.message;
  const Lines expected = {{false, "[rank 0] out one"}, {false, "[rank 0] out two"}, {false, "[rank 1] out one"},
                          {false, "[rank 1] out two"}, {true, "[rank 0] err one"},  {true, "[rank 0] err two"},
                          {true, "[rank 1] err one"},  {true, "[rank 1] err two"}};
  EXPECT_EQ(r.lines, expected);
  EXPECT_EQ(r.result.failed_rank, -1);
  EXPECT_EQ(r.result.message, "all 2 ranks exited 0");
}

TEST(Launcher, DeliversPartialLastLine) {
  const Outcome r = run(shell(1, "printf 'first\\nsecond'; printf 'no newline' >&2"));
  const Lines expected = {{false, "[rank 0] first"}, {false, "[rank 0] second"}, {true, "[rank 0] no newline"}};
  EXPECT_EQ(r.lines, expected);
}

TEST(Launcher, DoesNotWaitForBackgroundChildrenOfARank) {
  // The background sleep keeps the rank's pipes open after the rank itself has exited.
  const Outcome r = run(shell(1, "sleep 30 & echo $!; printf 'partial'"));
  ASSERT_EQ(r.lines.size(), 2u);
  ASSERT_EQ(r.lines[1], (std::pair<bool, std::string>{false, "[rank 0] partial"}));
  kill(std::stoi(r.lines[0].second.substr(9)), SIGKILL);  // "[rank 0] <pid of the sleep>"
  EXPECT_EQ(r.result.exit_code, 0) << r.result.message;
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, KeepsEmptyLines) {
  const Outcome r = run(shell(1, "printf 'a\\n\\nb\\n'"));
  const Lines expected = {{false, "[rank 0] "}, {false, "[rank 0] a"}, {false, "[rank 0] b"}};
  EXPECT_EQ(r.lines, expected);
}

TEST(Launcher, FailingRankStopsTheOthers) {
  const Outcome r = run(shell(3, "if [ $RANK = 1 ]; then echo bye; exit 3; fi; sleep 30; echo too late"));
  EXPECT_EQ(r.result.exit_code, 3);
  EXPECT_EQ(r.result.failed_rank, 1);
  EXPECT_EQ(r.result.message, "rank 1 exited with status 3; stopped ranks 0, 2");
  EXPECT_LT(r.seconds, 10.0) << "the other ranks were not stopped";
  EXPECT_EQ(r.lines, (Lines{{false, "[rank 1] bye"}}));
}

TEST(Launcher, KillsRanksThatIgnoreSigterm) {
  // Rank 0 fails only once rank 1 has announced, through a file, that it ignores SIGTERM.
  char dir[] = "/tmp/tpipe_launcher_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string ready = std::string(dir) + "/ready";
  LaunchOptions o = shell(2, "if [ $RANK = 0 ]; then while [ ! -e " + ready + " ]; do sleep 0.01; done; exit 1; fi; " +
                                 "trap '' TERM; touch " + ready + "; sleep 30");
  o.grace = std::chrono::milliseconds(200);
  const Outcome r = run(o);
  unlink(ready.c_str());
  rmdir(dir);
  EXPECT_EQ(r.result.exit_code, 1);
  EXPECT_EQ(r.result.failed_rank, 0);
  EXPECT_EQ(r.result.message, "rank 0 exited with status 1; stopped ranks 1 (SIGKILL after 200 ms: 1)");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, ReportsRankKilledBySignal) {
  const Outcome r = run(shell(2, "if [ $RANK = 0 ]; then kill -9 $$; fi; sleep 30"));
  EXPECT_EQ(r.result.exit_code, 137);
  EXPECT_EQ(r.result.failed_rank, 0);
  EXPECT_EQ(r.result.message, "rank 0 was killed by signal 9 (Killed); stopped ranks 1");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, MissingProgramExits127) {
  LaunchOptions o;
  o.nproc = 1;
  o.command = {"tpipe-no-such-program", "--flag"};
  const Outcome r = run(o);
  EXPECT_EQ(r.result.exit_code, 127);
  EXPECT_EQ(r.result.failed_rank, 0);
  EXPECT_EQ(r.lines, (Lines{{true, "[rank 0] cannot run 'tpipe-no-such-program': No such file or directory"}}));
}

TEST(Launcher, ForwardsSigintToRanks) {
  // Rank 1 interrupts the launcher (its parent), which must pass the signal on to every rank.
  // `exec sleep` because sh itself defers SIGINT; a long grace shows the ranks stopped on SIGINT.
  LaunchOptions o = shell(2, "if [ $RANK = 1 ]; then (sleep 0.2; kill -INT $PPID) & fi; exec sleep 30");
  o.grace = std::chrono::seconds(20);
  // The launcher leaves an ignored SIGINT ignored, as a test runner started in the background has it.
  struct sigaction dfl {}, old {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGINT, &dfl, &old);
  const Outcome r = run(o);
  sigaction(SIGINT, &old, nullptr);
  EXPECT_EQ(r.result.exit_code, 130);
  EXPECT_EQ(r.result.failed_rank, -1);
  EXPECT_EQ(r.result.message, "interrupted by signal 2 (Interrupt); stopped ranks 0, 1");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, RejectsBadOptions) {
  EXPECT_THROW(launch(shell(0, "true"), nullptr), ConfigError);
  LaunchOptions empty;
  EXPECT_THROW(launch(empty, nullptr), ConfigError);
  LaunchOptions nodes = shell(1, "true");
  nodes.nnodes = 0;
  EXPECT_THROW(launch(nodes, nullptr), ConfigError);
  nodes.nnodes = 2;
  nodes.node_rank = 2;
  nodes.master_port = 29555;
  EXPECT_THROW(launch(nodes, nullptr), ConfigError);
  nodes.node_rank = 1;
  nodes.master_port = 0;
  try {
    launch(nodes, nullptr);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "--master-port is required with --nnodes > 1");
  }
}

TEST(Launcher, RejectsBusyMasterPort) {
  const Socket busy(/*listening=*/false);  // bound is enough: rank 0 could not bind it
  LaunchOptions o = shell(2, "echo started");
  o.master_port = busy.port;
  try {
    launch(o, nullptr);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "port " + std::to_string(busy.port) +
                                         " on 127.0.0.1 is in use; pass --master-port 0 to pick a free one");
  }
}

// The message of the ConfigError that check_launch_size throws, "" if it accepts.
std::string size_error(int nproc, int nnodes, int node_rank, int cores) {
  try {
    check_launch_size(nproc, nnodes, node_rank, cores);
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

TEST(LaunchSize, AcceptsWhatTheMachineCanRun) {
  EXPECT_EQ(size_error(1, 1, 0, 1), "");
  EXPECT_EQ(size_error(8, 1, 0, 1), "");
  EXPECT_EQ(size_error(16, 1, 0, 2), "");
  EXPECT_EQ(size_error(256, 1, 0, 64), "");
  EXPECT_EQ(size_error(256, 1000, 999, 32), "");
  EXPECT_EQ(size_error(8, 1, 0, 0), "") << "cores < 1 counts as one core";
}

TEST(LaunchSize, RefusesMoreRanksThanCoresCanRun) {
  EXPECT_EQ(size_error(17, 1, 0, 2), "cannot start 17 ranks on this machine: at most 16 (8 per core on 2 cores)");
  EXPECT_EQ(size_error(100000, 1, 0, 8),
            "cannot start 100000 ranks on this machine: at most 64 (8 per core on 8 cores)");
  EXPECT_EQ(size_error(9, 1, 0, 1), "cannot start 9 ranks on this machine: at most 8 (8 per core on 1 core)");
  EXPECT_EQ(size_error(9, 1, 0, -3), "cannot start 9 ranks on this machine: at most 8 (8 per core on 1 core)");
  EXPECT_EQ(size_error(INT_MAX, 1, 0, 2),
            "cannot start 2147483647 ranks on this machine: at most 16 (8 per core on 2 cores)");
}

TEST(LaunchSize, RefusesMoreThan256RanksOnAnyMachine) {
  EXPECT_EQ(size_error(257, 1, 0, 64), "cannot start 257 ranks on this machine: at most 256 (the limit for one machine)");
  EXPECT_EQ(size_error(1000, 1, 0, INT_MAX),
            "cannot start 1000 ranks on this machine: at most 256 (the limit for one machine)");
}

TEST(LaunchSize, RefusesJobsLargerThanAnIntCounts) {
  EXPECT_EQ(size_error(256, 8388608, 0, 64),
            "--nnodes 8388608 x 256 ranks per node = 2147483648 ranks, more than a job can have (at most 2147483647)");
  EXPECT_EQ(size_error(255, 8388608, 0, 64), "") << "255 x 2^23 = 2139095040 still fits";
  EXPECT_EQ(size_error(2, INT_MAX, 5, 1),
            "--nnodes 2147483647 x 2 ranks per node = 4294967294 ranks, more than a job can have (at most 2147483647)");
}

TEST(LaunchSize, RefusesCountsBelowOneAndNodeRankOutOfRange) {
  EXPECT_EQ(size_error(0, 1, 0, 2), "--nproc-per-node must be at least 1, got 0");
  EXPECT_EQ(size_error(-2147483647 - 1, 1, 0, 2), "--nproc-per-node must be at least 1, got -2147483648");
  EXPECT_EQ(size_error(1, 0, 0, 2), "--nnodes must be at least 1, got 0");
  EXPECT_EQ(size_error(1, 2, 2, 2), "--node-rank must be in [0, 1] with --nnodes 2, got 2");
  EXPECT_EQ(size_error(1, 2, -1, 2), "--node-rank must be in [0, 1] with --nnodes 2, got -1");
}

TEST(Launcher, RefusesMoreRanksThanThisMachineCanRunBeforeStartingAny) {
  const int most = std::min(kRanksPerCore * usable_cores(), kMaxLocalRanks);
  try {
    launch(shell(most + 1, "echo started"), nullptr);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cannot start " + std::to_string(most + 1) + " ranks on this machine: at most " +
                                              std::to_string(most) + " (",
                                          0),
              0u)
        << e.what();
  }
}

TEST(FailureReport, FormatsAndParses) {
  EXPECT_EQ(format_failure_report({123456789, "boom"}), "123456789\nboom\n");
  const auto r = parse_failure_report("123456789\nboom\n");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->time_ns, 123456789);
  EXPECT_EQ(r->what, "boom");
  const auto empty = parse_failure_report("5\n\n");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->what, "");
}

TEST(FailureReport, RefusesMalformedText) {
  for (const std::string bad : {"", "\n", "12", "12\nno newline", "x12\nboom\n", "-5\nboom\n", " 5\nboom\n",
                                "99999999999999999999\nboom\n", "9999999999999999999\nboom\n"})
    EXPECT_FALSE(parse_failure_report(bad).has_value()) << '"' << bad << '"';
  EXPECT_TRUE(parse_failure_report("9223372036854775807\nmax\n").has_value());
}

TEST(FirstFailure, EarliestReportOrReapTimeWins) {
  EXPECT_EQ(first_failure({}), -1);
  // Reaped first, reported later: the peer that failed because of rank 1.
  EXPECT_EQ(first_failure({{0, 2000, 3000}, {1, 1000, 5000}}), 1);
  // Without reports, the reap order decides.
  EXPECT_EQ(first_failure({{2, std::nullopt, 3000}, {0, std::nullopt, 3500}}), 0);
  // A rank that did not report counts from when it was reaped.
  EXPECT_EQ(first_failure({{0, std::nullopt, 1500}, {1, 2000, 2500}}), 0);
  EXPECT_EQ(first_failure({{0, std::nullopt, 2500}, {1, 2000, 2600}}), 1);
  // Ties go to the rank reaped first.
  EXPECT_EQ(first_failure({{3, 1000, 2000}, {1, 1000, 2100}}), 0);
}

TEST(FailureReport, RankWritesItsFirstFailureOnly) {
  char dir[] = "/tmp/tpipe_report_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string file = std::string(dir) + "/rank-3";
  unsetenv(kFailureFileVariable);
  report_rank_failure("nowhere to go");  // no variable: nothing, and the next call still counts
  setenv(kFailureFileVariable, file.c_str(), 1);
  const auto before = std::chrono::steady_clock::now().time_since_epoch();
  report_rank_failure("first line\nsecond line");
  report_rank_failure("a later failure");
  unsetenv(kFailureFileVariable);
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  unlink(file.c_str());
  rmdir(dir);
  const auto report = parse_failure_report(text.str());
  ASSERT_TRUE(report.has_value()) << text.str();
  EXPECT_EQ(report->what, "first line");
  // steady_clock is CLOCK_MONOTONIC, the clock of the reports.
  EXPECT_GE(report->time_ns, std::chrono::duration_cast<std::chrono::nanoseconds>(before).count());
}

TEST(Launcher, GivesEachRankItsFailureFileAndRemovesThem) {
  const Outcome r = run(shell(2, "echo $" + std::string(kFailureFileVariable)));
  ASSERT_EQ(r.lines.size(), 2u);
  const std::string file0 = r.lines[0].second.substr(9), file1 = r.lines[1].second.substr(9);
  const std::string dir = file0.substr(0, file0.rfind('/'));
  EXPECT_EQ(file0, dir + "/rank-0");
  EXPECT_EQ(file1, dir + "/rank-1");
  EXPECT_NE(dir.find("/tpipe-launch-"), std::string::npos) << dir;
  struct stat st {};
  EXPECT_NE(stat(dir.c_str(), &st), 0) << dir << " was not removed";
}

// Rank 1 reports a failure (an early time, written as report_rank_failure would), lets rank 0 know
// through a file, and takes its time to exit; rank 0 fails at once and is reaped first.
std::string peer_fails_after_rank1(const std::string& dir, const std::string& rank1_after_report) {
  const std::string down = dir + "/down";
  return "if [ $RANK = 1 ]; then printf '1\\nboom\\n' > $TPIPE_FAILURE_FILE; touch " + down + "; " +
         rank1_after_report + "; fi; if [ $RANK = 0 ]; then while [ ! -e " + down +
         " ]; do sleep 0.01; done; exit 2; fi; sleep 30";
}

TEST(Launcher, BlamesTheRankThatReportedFirstNotTheFirstReaped) {
  char dir[] = "/tmp/tpipe_launcher_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const Outcome r = run(shell(3, peer_fails_after_rank1(dir, "sleep 0.3; exit 1")));
  unlink((std::string(dir) + "/down").c_str());
  rmdir(dir);
  EXPECT_EQ(r.result.exit_code, 1);
  EXPECT_EQ(r.result.failed_rank, 1);
  EXPECT_EQ(r.result.reason, "boom");
  EXPECT_EQ(r.result.message, "rank 1 failed first (exit status 1); rank 0 failed after it; stopped ranks 2");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, BlamesARankThatReportedThenHadToBeStopped) {
  char dir[] = "/tmp/tpipe_launcher_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  LaunchOptions o = shell(2, peer_fails_after_rank1(dir, "exec sleep 30"));
  o.settle = std::chrono::milliseconds(200);
  const Outcome r = run(o);
  unlink((std::string(dir) + "/down").c_str());
  rmdir(dir);
  EXPECT_EQ(r.result.exit_code, 143);
  EXPECT_EQ(r.result.failed_rank, 1);
  EXPECT_EQ(r.result.message, "rank 1 failed first (killed by signal 15, Terminated); rank 0 failed after it");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, WithoutReportsBlamesTheFirstReaped) {
  // As above, but rank 1 does not report: the launcher cannot tell that rank 0 failed because of
  // it, blames rank 0 (reaped first) and, as no running rank reported, stops rank 1 soon after.
  char dir[] = "/tmp/tpipe_launcher_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string down = std::string(dir) + "/down";
  const Outcome r = run(shell(2, "if [ $RANK = 1 ]; then touch " + down + "; exec sleep 30; fi; while [ ! -e " + down +
                                     " ]; do sleep 0.01; done; exit 4"));
  unlink(down.c_str());
  rmdir(dir);
  EXPECT_EQ(r.result.exit_code, 4);
  EXPECT_EQ(r.result.failed_rank, 0);
  EXPECT_EQ(r.result.reason, "");
  EXPECT_EQ(r.result.message, "rank 0 exited with status 4; stopped ranks 1");
  EXPECT_LT(r.seconds, 1.0) << "the settle time must end early when no running rank has reported";
}

TEST(Launcher, StopsRanksOnSighupWithSigterm) {
  // As the SIGINT test; ranks that ignore SIGHUP are still stopped, as the launcher sends SIGTERM.
  LaunchOptions o = shell(2, "trap '' HUP; if [ $RANK = 1 ]; then (sleep 0.2; kill -HUP $PPID) & fi; exec sleep 30");
  o.grace = std::chrono::seconds(20);
  struct sigaction dfl {}, old {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGHUP, &dfl, &old);
  const Outcome r = run(o);
  sigaction(SIGHUP, &old, nullptr);
  EXPECT_EQ(r.result.exit_code, 129);
  EXPECT_EQ(r.result.failed_rank, -1);
  EXPECT_EQ(r.result.message, "interrupted by signal 1 (Hangup); stopped ranks 0, 1");
  EXPECT_LT(r.seconds, 10.0);
}

TEST(Launcher, FreePortIsFree) {
  const int port = free_port();
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
  EXPECT_FALSE(port_in_use("127.0.0.1", port));
  EXPECT_TRUE(port_in_use("127.0.0.1", Socket(/*listening=*/true).port));
  EXPECT_TRUE(port_in_use("127.0.0.1", Socket(/*listening=*/false).port));
}

}  // namespace
}  // namespace tpipe
