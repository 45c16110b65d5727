// `tpipe doctor` and what `tpipe run` sets for its ranks, end to end: the ranks see the chosen
// thread count and malloc tunables, and a variable the user set reaches them unchanged.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "shell.h"

namespace {

using tpipe::testing::Output;

// Runs `env ENV tpipe ARGS` (ENV as for env(1): "-u NAME" or "NAME=VALUE" items).
Output tpipe(const std::string& env, const std::string& args) {
  return tpipe::testing::sh("env " + env + " " + std::string(TPIPE_BIN) + " " + args);
}

const char* kClean = "-u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS -u OPENBLAS_CORETYPE -u GLIBC_TUNABLES -u TPIPE_CPU_BIND";
const char* kShow = "run -n 2 -- sh -c 'echo \"omp=$OMP_NUM_THREADS ob=$OPENBLAS_NUM_THREADS tun=$GLIBC_TUNABLES\"'";

int cores() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

TEST(TuningCli, RunGivesEachRankItsShareOfTheCoresAndSaysWhy) {
  const auto out = tpipe(kClean, kShow);
  ASSERT_EQ(out.status, 0) << out.text;
  const std::string share = std::to_string(std::max(1, cores() / 2));
  const std::string want = "omp=" + share + " ob=" + share +
                           " tun=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";
  EXPECT_NE(out.text.find("[rank 0] " + want), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("[rank 1] " + want), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("tpipe run: "), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("per rank (" + std::to_string(cores()) + " cores / 2 local ranks)"), std::string::npos)
      << out.text;
}

// Each rank sees only its own core (when there are as many cores as ranks), unless the user says no.
TEST(TuningCli, RunBindsEachRankToCoresOfItsOwn) {
  if (cores() < 2) GTEST_SKIP() << "needs 2 cores to give 2 ranks one each; this machine has " << cores();
  const std::string show = "run -n 2 -- sh -c 'echo cpus=$(grep Cpus_allowed_list /proc/self/status | cut -f2)'";
  const auto out = tpipe(kClean, show);
  ASSERT_EQ(out.status, 0) << out.text;
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  std::vector<int> ids;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) ids.push_back(c);
  const int share = cores() / 2;
  auto range = [&](int r) {
    const int a = ids[r * share], b = ids[r * share + share - 1];
    return a == b ? std::to_string(a) : std::to_string(a) + "-" + std::to_string(b);
  };
  if (ids[share - 1] - ids[0] == share - 1 && ids[2 * share - 1] - ids[share] == share - 1) {  // contiguous ids
    EXPECT_NE(out.text.find("[rank 0] cpus=" + range(0) + "\n"), std::string::npos) << out.text;
    EXPECT_NE(out.text.find("[rank 1] cpus=" + range(1) + "\n"), std::string::npos) << out.text;
  }
  const auto off = tpipe(std::string(kClean) + " TPIPE_CPU_BIND=none", show);
  const std::string mine = "[rank 0] cpus=" + std::to_string(ids.front()) + "-" + std::to_string(ids.back()) + "\n";
  if (ids.back() - ids.front() + 1 == static_cast<int>(ids.size()))
    EXPECT_NE(off.text.find(mine), std::string::npos) << off.text;
}

TEST(TuningCli, RunNeverOverridesWhatTheUserSet) {
  const auto out = tpipe(std::string(kClean) +
                             " OMP_NUM_THREADS=3 OPENBLAS_NUM_THREADS=2 "
                             "GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536",
                         kShow);
  ASSERT_EQ(out.status, 0) << out.text;
  // The user's tunables kept as they are; only the trim threshold their mmap threshold turns
  // off is added.
  EXPECT_NE(out.text.find("[rank 1] omp=3 ob=2 tun=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536:"
                          "glibc.malloc.trim_threshold=268435456\n"),
            std::string::npos)
      << out.text;
  // The kernel the user named is kept as well.
  const auto k = tpipe(std::string(kClean) + " OPENBLAS_CORETYPE=Haswell", "run -n 1 -- sh -c 'echo k=$OPENBLAS_CORETYPE'");
  EXPECT_NE(k.text.find("[rank 0] k=Haswell\n"), std::string::npos) << k.text;
}

TEST(TuningCli, DoctorJsonReportsTheMachineAndTheRanksSettings) {
  const auto out = tpipe(std::string(kClean) + " OPENBLAS_NUM_THREADS=1", "doctor --json --gemm 128 --ranks 2");
  ASSERT_EQ(out.status, 0) << out.text;
  const auto j = nlohmann::json::parse(out.text);
  EXPECT_EQ(j["cores"].get<int>(), cores());
  EXPECT_EQ(j["ranks"].get<int>(), 2);
  EXPECT_EQ(j["gemm_n"].get<int>(), 128);
  EXPECT_GT(j["gemm_gflops"].get<double>(), 0.0);
  EXPECT_GT(j["rank_gemm_gflops"].get<double>(), 0.0);
  EXPECT_EQ(j["rank_env"].count("OPENBLAS_NUM_THREADS"), 0u);  // the user's
  EXPECT_EQ(j["rank_env"]["OMP_NUM_THREADS"], std::to_string(std::max(1, cores() / 2)));
  if (j["openblas"].get<bool>()) EXPECT_FALSE(j["openblas_corename"].get<std::string>().empty());
  EXPECT_FALSE(j["choice"].get<std::string>().empty());
}

// `tpipe run` does not load LibTorch, yet it judges the same BLAS the ranks will load: the kernel
// it names is the one `tpipe doctor` (which runs with LibTorch) finds.
TEST(TuningCli, RunJudgesTheBlasTheRanksWillLoad) {
  const auto doctor = tpipe(std::string(kClean) + " OPENBLAS_NUM_THREADS=1", "doctor --json --gemm 64");
  ASSERT_EQ(doctor.status, 0) << doctor.text;
  const auto j = nlohmann::json::parse(doctor.text);
  const auto run = tpipe(kClean, "run -n 1 -- true");
  ASSERT_EQ(run.status, 0) << run.text;
  if (j["openblas"].get<bool>()) {
    EXPECT_NE(run.text.find("OpenBLAS kernel " + j["openblas_corename"].get<std::string>()), std::string::npos)
        << run.text;
  } else {
    EXPECT_NE(run.text.find("BLAS is not OpenBLAS"), std::string::npos) << run.text;
  }
}

TEST(TuningCli, DoctorRefusesBadFlagsInOneLine) {
  const auto out = tpipe("", "doctor --ranks 0");
  EXPECT_NE(out.status, 0);
  EXPECT_NE(out.text.find("--ranks"), std::string::npos) << out.text;
}

}  // namespace
