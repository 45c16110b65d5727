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
// Runs with `sig` at its default disposition for the duration: the launcher leaves an ignored
// signal ignored, as a test runner started in the background has SIGINT.
Outcome run_with_default(int sig, const LaunchOptions& o) {
  struct sigaction dfl {}, old {};
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, &old);
  const Outcome r = run(o);
  sigaction(sig, &old, nullptr);
  return r;
}

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
  const Outcome r = run_with_default(SIGINT, o);
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
  const Outcome r = run_with_default(SIGHUP, o);
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
