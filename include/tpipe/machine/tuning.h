// What each rank's BLAS and thread settings should be, as a pure function of the machine's facts
// and the environment, so that it can be tested without the machine.
//
// Two things go wrong by default on a shared VM:
//   - OpenBLAS picks its kernel from the CPU's model; when a hypervisor hides the model, it falls
//     back to "Prescott" (SSE3) even on a CPU with AVX-512, and a GEMM runs 5-6x slower. Setting
//     OPENBLAS_CORETYPE before the library loads picks the right kernel.
//   - Every rank starts as many BLAS / intra-op threads as the machine has cores, so n local
//     ranks oversubscribe the cores n times. Each rank should get cores / n of them.
//   - glibc's malloc returns freed memory to the system and maps large blocks afresh, so every
//     micro-batch pays page faults for its multi-MiB temporaries (measured: a rank's backward
//     1.6-2x slower than the same work in one process). Fixed mmap and trim thresholds make it
//     reuse its heap; both must be set (either alone is worse than neither).
//   - LibTorch's intra-op pool (OpenMP) and a pthreads OpenBLAS each keep threads of their own,
//     and OpenMP's spin after every parallel region: with more than one thread in each, they
//     take the cores from each other (measured on a 2-core VM, one process, 2+2 threads: a step
//     2.4x slower than with 1 thread; with OMP_WAIT_POLICY=PASSIVE, 1.35x faster than 1 thread).
//   - Left to the scheduler, ranks and their helper threads (Gloo's, the Communicator's) wander
//     over all cores and wake each other's; each rank bound to cores of its own computes more
//     evenly and hears its messages sooner (measured on a 2-core VM: message latency 0.15-0.23
//     -> 0.07 ms, steps 3-5 % faster). TPIPE_CPU_BIND=none leaves the scheduler alone.
//   - A rank that sleeps while it waits for a peer gives its core back to the hypervisor, which
//     lends it to other guests: it comes back with cold caches. A rank bound to cores of its own
//     polls instead (TPIPE_WAIT=spin; measured on W1, 2 ranks on a 2-core VM: gpipe steps ~4 %
//     faster, paired over 8 alternations). Ranks that share cores keep sleeping.
// A variable the user set is never overridden: the choice only fills in what is unset.
#pragma once

#include <map>
#include <set>
#include <vector>
#include <string>
#include <utility>
#include <vector>

namespace tpipe {

// Instruction-set levels as OpenBLAS's kernels need them.
enum class IsaLevel { Unknown = 0, Sse3 = 1, Avx = 2, Avx2 = 3, Avx512 = 4 };

std::string to_string(IsaLevel level);

// The highest level the CPU's flags (as in /proc/cpuinfo: "avx2", "avx512f", ...) support.
IsaLevel cpu_isa_level(const std::set<std::string>& flags);

// The level an OpenBLAS core name ("Prescott", "Haswell", "SkylakeX", "Zen", ...; any case)
// needs; Unknown for a name not known here (then it is left alone).
IsaLevel openblas_core_level(const std::string& corename);

// The OpenBLAS core type to ask for on a CPU of this level ("" when there is none better).
std::string openblas_core_for(IsaLevel level);

struct MachineFacts {
  std::set<std::string> cpu_flags;
  int cores = 1;                 // usable by this process (affinity), >= 1
  std::vector<int> cpus;         // their ids (empty: unknown, no binding)
  bool openblas = false;         // the BLAS in use is OpenBLAS
  std::string blas_corename;     // OpenBLAS's kernel, as openblas_get_corename() says
  bool blas_own_threads = false;  // OpenBLAS runs its own thread pool (a pthreads build), not OpenMP's
  bool glibc = true;             // malloc is glibc's (GLIBC_TUNABLES applies)
};

// What GLIBC_TUNABLES gets for the ranks: each of these the user's own tunables do not name is
// appended to them.
struct MallocTunable {
  const char* name;
  const char* value;
  const char* what;
};
constexpr MallocTunable kMallocTunables[] = {
    {"glibc.malloc.mmap_threshold", "33554432", "mmap threshold"},
    {"glibc.malloc.trim_threshold", "268435456", "trim threshold"},
};

struct RankTuning {
  std::vector<std::pair<std::string, std::string>> set;  // variables to set in every rank
  int threads_per_rank = 1;      // what the ranks will run with (chosen or the user's)
  std::vector<std::vector<int>> cpus;  // per local rank, the CPUs it is bound to (empty: none)
  std::string line;              // one line saying what was chosen and why
};

// The settings for `local_ranks` ranks of one node. `env` holds the variables already set
// (only their presence and values matter); none of them is ever overridden.
RankTuning choose_rank_tuning(const MachineFacts& facts, int local_ranks,
                              const std::map<std::string, std::string>& env);

}  // namespace tpipe
