// The choice of OpenBLAS kernel and threads per rank: a pure function of the machine's facts and
// the environment; a variable the user set is never overridden.
#include <gtest/gtest.h>

#include "tpipe/machine/tuning.h"

namespace tpipe {
namespace {

const std::set<std::string> kAvx512 = {"sse3", "avx", "avx2", "fma", "avx512f", "avx512cd",
                                       "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"};
const std::set<std::string> kAvx2 = {"pni", "avx", "avx2", "fma"};

// Facts without CPU ids (no binding) and without glibc: those have tests of their own below.
MachineFacts facts(std::set<std::string> flags, int cores, std::string corename, bool openblas = true) {
  MachineFacts f;
  f.cpu_flags = std::move(flags);
  f.cores = cores;
  f.openblas = openblas;
  f.blas_corename = std::move(corename);
  f.glibc = false;
  return f;
}

// The variables chosen (facts() says the malloc is not glibc's: GLIBC_TUNABLES has a test of its own).
std::map<std::string, std::string> as_map(const RankTuning& t) { return {t.set.begin(), t.set.end()}; }

TEST(Tuning, IsaLevelsFromCpuFlags) {
  EXPECT_EQ(cpu_isa_level(kAvx512), IsaLevel::Avx512);
  EXPECT_EQ(cpu_isa_level(kAvx2), IsaLevel::Avx2);
  EXPECT_EQ(cpu_isa_level({"avx2"}), IsaLevel::Unknown);  // AVX2 without FMA nor AVX: not Haswell's
  EXPECT_EQ(cpu_isa_level({"avx", "avx2"}), IsaLevel::Avx);
  EXPECT_EQ(cpu_isa_level({"avx512f", "avx2", "fma"}), IsaLevel::Avx2);  // F alone is not SkylakeX
  EXPECT_EQ(cpu_isa_level({"pni"}), IsaLevel::Sse3);
  EXPECT_EQ(cpu_isa_level({}), IsaLevel::Unknown);
}

TEST(Tuning, OpenBlasCoreLevels) {
  EXPECT_EQ(openblas_core_level("Prescott"), IsaLevel::Sse3);
  EXPECT_EQ(openblas_core_level("PRESCOTT"), IsaLevel::Sse3);
  EXPECT_EQ(openblas_core_level("Sandybridge"), IsaLevel::Avx);
  EXPECT_EQ(openblas_core_level("Haswell"), IsaLevel::Avx2);
  EXPECT_EQ(openblas_core_level("Zen"), IsaLevel::Avx2);
  EXPECT_EQ(openblas_core_level("SkylakeX"), IsaLevel::Avx512);
  EXPECT_EQ(openblas_core_level("Cooperlake"), IsaLevel::Avx512);
  EXPECT_EQ(openblas_core_level("NeoverseN1"), IsaLevel::Unknown);
  EXPECT_EQ(openblas_core_for(IsaLevel::Avx512), "SkylakeX");
  EXPECT_EQ(openblas_core_for(IsaLevel::Avx2), "Haswell");
  EXPECT_EQ(openblas_core_for(IsaLevel::Sse3), "");
}

TEST(Tuning, PrescottOnAnAvx512MachineGetsSkylakeXAndCoresAreShared) {
  const RankTuning t = choose_rank_tuning(facts(kAvx512, 2, "Prescott"), 2, {});
  EXPECT_EQ(as_map(t), (std::map<std::string, std::string>{
                           {"OPENBLAS_CORETYPE", "SkylakeX"}, {"OMP_NUM_THREADS", "1"}, {"OPENBLAS_NUM_THREADS", "1"}}));
  EXPECT_EQ(t.threads_per_rank, 1);
  EXPECT_EQ(t.line,
            "OPENBLAS_CORETYPE=SkylakeX (OpenBLAS chose Prescott, an SSE3 kernel, on a CPU with AVX-512); "
            "1 thread per rank (2 cores / 2 local ranks)");
}

TEST(Tuning, CoresAreDividedRoundingDownButNeverBelowOne) {
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx2, 16, "Haswell"), 3, {})),
            (std::map<std::string, std::string>{{"OMP_NUM_THREADS", "5"}, {"OPENBLAS_NUM_THREADS", "5"}}));
  const RankTuning t = choose_rank_tuning(facts(kAvx2, 2, "Haswell"), 8, {});
  EXPECT_EQ(as_map(t), (std::map<std::string, std::string>{{"OMP_NUM_THREADS", "1"}, {"OPENBLAS_NUM_THREADS", "1"}}));
  EXPECT_EQ(choose_rank_tuning(facts(kAvx2, 8, "Haswell"), 1, {}).threads_per_rank, 8);
  EXPECT_EQ(choose_rank_tuning(facts(kAvx2, 0, "Haswell"), 0, {}).threads_per_rank, 1);
}

TEST(Tuning, AKernelThatMatchesOrBeatsTheCpuIsKept) {
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx512, 4, "SkylakeX"), 4, {})).count("OPENBLAS_CORETYPE"), 0u);
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx2, 4, "Haswell"), 4, {})).count("OPENBLAS_CORETYPE"), 0u);
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx2, 4, "Zen"), 4, {})).count("OPENBLAS_CORETYPE"), 0u);
  // Older than the CPU: Haswell on AVX-512 is raised, Prescott on AVX2 too.
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx512, 4, "Haswell"), 4, {})).at("OPENBLAS_CORETYPE"), "SkylakeX");
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx2, 4, "Prescott"), 4, {})).at("OPENBLAS_CORETYPE"), "Haswell");
  // A kernel name not known here is left alone.
  EXPECT_EQ(as_map(choose_rank_tuning(facts(kAvx512, 4, "SomethingNew"), 4, {})).count("OPENBLAS_CORETYPE"), 0u);
}

TEST(Tuning, AnotherBlasGetsNoOpenBlasVariableButStillThreads) {
  const RankTuning t = choose_rank_tuning(facts(kAvx512, 4, "", false), 2, {});
  EXPECT_EQ(as_map(t), (std::map<std::string, std::string>{{"OMP_NUM_THREADS", "2"}, {"OPENBLAS_NUM_THREADS", "2"}}));
  EXPECT_NE(t.line.find("not OpenBLAS"), std::string::npos);
}

TEST(Tuning, TheUsersVariablesAreNeverOverridden) {
  const auto f = facts(kAvx512, 8, "Prescott");
  const RankTuning kept = choose_rank_tuning(f, 2, {{"OPENBLAS_CORETYPE", "Haswell"}});
  EXPECT_EQ(as_map(kept).count("OPENBLAS_CORETYPE"), 0u);
  EXPECT_NE(kept.line.find("OPENBLAS_CORETYPE=Haswell (yours), an AVX2 kernel on a CPU with AVX-512: SkylakeX would "
                           "be faster"),
            std::string::npos);
  const RankTuning good = choose_rank_tuning(f, 2, {{"OPENBLAS_CORETYPE", "SkylakeX"}});
  EXPECT_EQ(good.line.find("faster"), std::string::npos);

  const RankTuning omp = choose_rank_tuning(f, 2, {{"OMP_NUM_THREADS", "3"}});
  EXPECT_EQ(as_map(omp), (std::map<std::string, std::string>{{"OPENBLAS_CORETYPE", "SkylakeX"}}));
  EXPECT_EQ(omp.threads_per_rank, 3);

  const RankTuning ob = choose_rank_tuning(f, 2, {{"OPENBLAS_NUM_THREADS", "1"}});
  EXPECT_EQ(as_map(ob), (std::map<std::string, std::string>{{"OPENBLAS_CORETYPE", "SkylakeX"}, {"OMP_NUM_THREADS", "4"}}));

  // Set but empty or nonsense still counts as set: it is the user's, not ours to replace.
  const RankTuning odd = choose_rank_tuning(f, 2, {{"OMP_NUM_THREADS", "many"}, {"OPENBLAS_NUM_THREADS", ""}});
  EXPECT_EQ(as_map(odd), (std::map<std::string, std::string>{{"OPENBLAS_CORETYPE", "SkylakeX"}}));
}

TEST(Tuning, OpenMpWaitsPassivelyWhenAPthreadsOpenBlasAlsoHasSeveralThreads) {
  MachineFacts f = facts(kAvx512, 4, "SkylakeX");
  f.blas_own_threads = true;
  const RankTuning one = choose_rank_tuning(f, 1, {});
  EXPECT_EQ(as_map(one), (std::map<std::string, std::string>{
                             {"OMP_NUM_THREADS", "4"}, {"OPENBLAS_NUM_THREADS", "4"}, {"OMP_WAIT_POLICY", "PASSIVE"}}));
  EXPECT_NE(one.line.find("OMP_WAIT_POLICY=PASSIVE (OpenBLAS has threads of its own"), std::string::npos);
  // One thread in either pool: nothing spins against anything.
  EXPECT_EQ(as_map(choose_rank_tuning(f, 4, {})).count("OMP_WAIT_POLICY"), 0u);
  EXPECT_EQ(as_map(choose_rank_tuning(f, 1, {{"OPENBLAS_NUM_THREADS", "1"}})).count("OMP_WAIT_POLICY"), 0u);
  EXPECT_EQ(as_map(choose_rank_tuning(f, 1, {{"OMP_NUM_THREADS", "1"}, {"OPENBLAS_NUM_THREADS", "1"}}))
                .count("OMP_WAIT_POLICY"),
            0u);
  // The user's threads count too, and the user's policy is kept and said.
  EXPECT_EQ(as_map(choose_rank_tuning(f, 4, {{"OMP_NUM_THREADS", "2"}})).at("OMP_WAIT_POLICY"), "PASSIVE");
  const RankTuning mine = choose_rank_tuning(f, 1, {{"OMP_WAIT_POLICY", "ACTIVE"}});
  EXPECT_EQ(as_map(mine).count("OMP_WAIT_POLICY"), 0u);
  EXPECT_NE(mine.line.find("OMP_WAIT_POLICY=ACTIVE (yours)"), std::string::npos);
  // OpenBLAS on OpenMP's threads (or another BLAS): one pool, left alone.
  f.blas_own_threads = false;
  EXPECT_EQ(as_map(choose_rank_tuning(f, 1, {})).count("OMP_WAIT_POLICY"), 0u);
}

TEST(Tuning, GlibcMallocKeepsFreedMemoryWhereTheUserSaidNothingElse) {
  auto f = facts(kAvx512, 2, "SkylakeX");
  f.glibc = true;
  const std::string ours = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";
  EXPECT_EQ(as_map(choose_rank_tuning(f, 2, {})).at("GLIBC_TUNABLES"), ours);
  // Other tunables of the user's are kept, ours appended.
  EXPECT_EQ(as_map(choose_rank_tuning(f, 2, {{"GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F"}})).at("GLIBC_TUNABLES"),
            "glibc.cpu.hwcaps=-AVX512F:" + ours);
  // Other malloc tunables of the user's: kept, ours appended.
  EXPECT_EQ(as_map(choose_rank_tuning(f, 2, {{"GLIBC_TUNABLES", "glibc.malloc.arena_max=2"}})).at("GLIBC_TUNABLES"),
            "glibc.malloc.arena_max=2:" + ours);
  // The user's mmap threshold is kept, and the trim threshold it turns off is added (an mmap
  // threshold alone made tpipe train's steps 2.2x slower here).
  const RankTuning half =
      choose_rank_tuning(f, 2, {{"GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576"}});
  EXPECT_EQ(as_map(half).at("GLIBC_TUNABLES"),
            "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=268435456");
  EXPECT_NE(half.line.find("malloc keeps freed memory (GLIBC_TUNABLES glibc.malloc.trim_threshold=268435456 added; "
                           "your mmap threshold kept)"),
            std::string::npos)
      << half.line;
  // Both of ours named by the user: left alone.
  const RankTuning t = choose_rank_tuning(
      f, 2, {{"GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0:glibc.malloc.mmap_threshold=65536"}});
  EXPECT_EQ(as_map(t).count("GLIBC_TUNABLES"), 0u);
  EXPECT_NE(t.line.find("malloc tunables yours"), std::string::npos);
  // Not glibc: nothing.
  f.glibc = false;
  EXPECT_EQ(as_map(choose_rank_tuning(f, 2, {})).count("GLIBC_TUNABLES"), 0u);
}

TEST(Tuning, EachRankIsBoundToCoresOfItsOwnWhenTheyFit) {
  auto f = facts(kAvx512, 4, "SkylakeX");
  f.cpus = {0, 1, 4, 5};  // e.g. started under taskset -c 0,1,4,5
  const RankTuning two = choose_rank_tuning(f, 2, {});
  EXPECT_EQ(two.cpus, (std::vector<std::vector<int>>{{0, 1}, {4, 5}}));
  EXPECT_NE(two.line.find("; each rank bound to 2 cores of its own"), std::string::npos) << two.line;
  EXPECT_EQ(choose_rank_tuning(f, 4, {}).cpus, (std::vector<std::vector<int>>{{0}, {1}, {4}, {5}}));
  // More ranks than cores, or the user's threads do not fit: nobody is bound.
  EXPECT_TRUE(choose_rank_tuning(f, 5, {}).cpus.empty());
  EXPECT_TRUE(choose_rank_tuning(f, 2, {{"OMP_NUM_THREADS", "3"}}).cpus.empty());
  EXPECT_EQ(choose_rank_tuning(f, 2, {{"OMP_NUM_THREADS", "2"}}).cpus.size(), 2u);
  // The user can say no.
  const RankTuning off = choose_rank_tuning(f, 2, {{"TPIPE_CPU_BIND", "none"}});
  EXPECT_TRUE(off.cpus.empty());
  EXPECT_NE(off.line.find("ranks not bound to cores (TPIPE_CPU_BIND=none)"), std::string::npos) << off.line;
  // Unknown CPU ids: no binding.
  f.cpus.clear();
  EXPECT_TRUE(choose_rank_tuning(f, 2, {}).cpus.empty());
}

TEST(Tuning, ARankWithCoresOfItsOwnPollsWhileItWaitsForAPeer) {
  auto f = facts(kAvx512, 2, "SkylakeX");
  f.cpus = {0, 1};
  const RankTuning bound = choose_rank_tuning(f, 2, {});
  EXPECT_EQ(as_map(bound).at("TPIPE_WAIT"), "spin");
  EXPECT_NE(bound.line.find("each rank bound to 1 core of its own, polling while it waits for a peer (TPIPE_WAIT=spin)"),
            std::string::npos)
      << bound.line;
  // The user's choice stands.
  const RankTuning theirs = choose_rank_tuning(f, 2, {{"TPIPE_WAIT", "sleep"}});
  EXPECT_EQ(as_map(theirs).count("TPIPE_WAIT"), 0u);
  EXPECT_NE(theirs.line.find("TPIPE_WAIT=sleep (yours)"), std::string::npos) << theirs.line;
  // Ranks that share cores (more ranks than cores, or binding off) must not poll: they would
  // take the core from the rank they wait for.
  for (const auto& t : {choose_rank_tuning(f, 3, {}), choose_rank_tuning(f, 2, {{"TPIPE_CPU_BIND", "none"}})}) {
    EXPECT_EQ(as_map(t).count("TPIPE_WAIT"), 0u);
    EXPECT_EQ(t.line.find("TPIPE_WAIT"), std::string::npos) << t.line;
  }
}

TEST(Tuning, OversubscriptionByTheUserIsSaid) {
  const RankTuning t = choose_rank_tuning(facts(kAvx512, 2, "SkylakeX"), 2, {{"OMP_NUM_THREADS", "2"}});
  EXPECT_NE(t.line.find("oversubscribed"), std::string::npos);
  EXPECT_EQ(t.threads_per_rank, 2);
}

}  // namespace
}  // namespace tpipe
