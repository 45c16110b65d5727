// The launcher's pure parts: how many ranks a machine may start, and the failure reports that let
// it blame the rank that failed first.
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tpipe/error.h"
#include "tpipe/comm/peer_loss.h"
#include "tpipe/launcher.h"

namespace tpipe {
namespace {

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

}  // namespace
}  // namespace tpipe

namespace {

// A node that dies shows on the others as their ranks losing peers: the launcher names that node.
TEST(RemoteNodeNote, NamesTheNodeOfALostPeer) {
  const std::string closed = "[rank 1 | stage 0 | mb 4 | 0B4] receiving the gradient of mb 4 from rank 2 failed: " +
                             tpipe::peer_closed_text(2) + " [gloo: ...]";
  EXPECT_EQ(tpipe::remote_node_note({closed}, 2, 2, 0),
            "; rank 2 is on node 1 (ranks 2 to 3): that node died, failed or cannot be reached");
  const std::string silent = "[rank 0] ... failed: " + tpipe::peer_silent_text(7) + "10 s (hung, ...)";
  EXPECT_EQ(tpipe::remote_node_note({"no peer named here", silent}, 4, 2, 0),
            "; rank 7 is on node 3 (ranks 6 to 7): that node died, failed or cannot be reached");
  EXPECT_EQ(tpipe::remote_node_note({closed}, 1, 4, 0), "") << "one node: nothing to add";
  EXPECT_EQ(tpipe::remote_node_note({"... " + tpipe::peer_closed_text(1)}, 2, 2, 0), "") << "a peer on this node";
  EXPECT_EQ(tpipe::remote_node_note({"rank 12 closed"}, 2, 2, 0), "");
  EXPECT_EQ(tpipe::lost_peer("from rank 2 failed: " + tpipe::peer_closed_text(3)), 3) << "the phrase, not any rank";
}

}  // namespace
