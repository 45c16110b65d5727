// The pure choice of BLAS kernel and threads per rank (see tuning.h).
#include "tpipe/machine/tuning.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace tpipe {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool has_all(const std::set<std::string>& flags, std::initializer_list<const char*> need) {
  return std::all_of(need.begin(), need.end(), [&](const char* f) { return flags.count(f) > 0; });
}

// A thread count the user set: a positive whole number, or 0 when unset or not a number.
int positive_int(const std::map<std::string, std::string>& env, const std::string& name) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return 0;
  char* end = nullptr;
  const long v = std::strtol(it->second.c_str(), &end, 10);
  return *end == '\0' && v > 0 && v < 1 << 20 ? static_cast<int>(v) : 0;
}

}  // namespace

std::string to_string(IsaLevel level) {
  switch (level) {
    case IsaLevel::Sse3: return "SSE3";
    case IsaLevel::Avx: return "AVX";
    case IsaLevel::Avx2: return "AVX2";
    case IsaLevel::Avx512: return "AVX-512";
    default: return "unknown";
  }
}

IsaLevel cpu_isa_level(const std::set<std::string>& flags) {
  // OpenBLAS's SkylakeX kernels use the F, CD, BW, DQ and VL subsets; Haswell's need AVX2 and FMA.
  if (has_all(flags, {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})) return IsaLevel::Avx512;
  if (has_all(flags, {"avx2", "fma"})) return IsaLevel::Avx2;
  if (flags.count("avx")) return IsaLevel::Avx;
  if (flags.count("pni") || flags.count("sse3")) return IsaLevel::Sse3;
  return IsaLevel::Unknown;
}

IsaLevel openblas_core_level(const std::string& corename) {
  static const std::map<std::string, IsaLevel> levels = {
      {"katmai", IsaLevel::Sse3},      {"coppermine", IsaLevel::Sse3}, {"northwood", IsaLevel::Sse3},
      {"prescott", IsaLevel::Sse3},    {"banias", IsaLevel::Sse3},     {"core2", IsaLevel::Sse3},
      {"penryn", IsaLevel::Sse3},      {"dunnington", IsaLevel::Sse3}, {"nehalem", IsaLevel::Sse3},
      {"atom", IsaLevel::Sse3},        {"athlon", IsaLevel::Sse3},     {"opteron", IsaLevel::Sse3},
      {"opteron_sse3", IsaLevel::Sse3}, {"barcelona", IsaLevel::Sse3}, {"bobcat", IsaLevel::Sse3},
      {"nano", IsaLevel::Sse3},        {"sandybridge", IsaLevel::Avx}, {"bulldozer", IsaLevel::Avx},
      {"piledriver", IsaLevel::Avx},   {"steamroller", IsaLevel::Avx}, {"excavator", IsaLevel::Avx},
      {"haswell", IsaLevel::Avx2},     {"zen", IsaLevel::Avx2},        {"skylakex", IsaLevel::Avx512},
      {"cooperlake", IsaLevel::Avx512}, {"sapphirerapids", IsaLevel::Avx512}};
  auto it = levels.find(lower(corename));
  return it == levels.end() ? IsaLevel::Unknown : it->second;
}

std::string openblas_core_for(IsaLevel level) {
  switch (level) {
    case IsaLevel::Avx512: return "SkylakeX";
    case IsaLevel::Avx2: return "Haswell";
    case IsaLevel::Avx: return "Sandybridge";
    default: return "";
  }
}

RankTuning choose_rank_tuning(const MachineFacts& facts, int local_ranks,
                              const std::map<std::string, std::string>& env) {
  RankTuning t;
  std::string kernel, threads;

  const IsaLevel cpu = cpu_isa_level(facts.cpu_flags), blas = openblas_core_level(facts.blas_corename);
  if (!facts.openblas) {
    kernel = "BLAS is not OpenBLAS, kernel left to it";
  } else if (auto it = env.find("OPENBLAS_CORETYPE"); it != env.end() && !it->second.empty()) {
    kernel = "OPENBLAS_CORETYPE=" + it->second + " (yours)";
    const IsaLevel mine = openblas_core_level(it->second);
    if (mine != IsaLevel::Unknown && cpu > mine && !openblas_core_for(cpu).empty())
      kernel += ", an " + to_string(mine) + " kernel on a CPU with " + to_string(cpu) + ": " + openblas_core_for(cpu) +
                " would be faster";
  } else if (blas != IsaLevel::Unknown && cpu > blas && !openblas_core_for(cpu).empty()) {
    t.set.emplace_back("OPENBLAS_CORETYPE", openblas_core_for(cpu));
    kernel = "OPENBLAS_CORETYPE=" + openblas_core_for(cpu) + " (OpenBLAS chose " + facts.blas_corename +
             ", an " + to_string(blas) + " kernel, on a CPU with " + to_string(cpu) + ")";
  } else {
    kernel = "OpenBLAS kernel " + (facts.blas_corename.empty() ? std::string("unknown") : facts.blas_corename) +
             " (kept: it matches the CPU's " + to_string(cpu) + ")";
  }

  const int ranks = std::max(1, local_ranks), cores = std::max(1, facts.cores);
  const int share = std::max(1, cores / ranks);
  const int omp = positive_int(env, "OMP_NUM_THREADS"), ob = positive_int(env, "OPENBLAS_NUM_THREADS");
  // The intra-op pool follows OMP_NUM_THREADS; OpenBLAS follows its own variable, then OMP's.
  if (!env.count("OMP_NUM_THREADS")) t.set.emplace_back("OMP_NUM_THREADS", std::to_string(share));
  if (!env.count("OPENBLAS_NUM_THREADS") && !omp) t.set.emplace_back("OPENBLAS_NUM_THREADS", std::to_string(share));
  t.threads_per_rank = omp ? omp : share;
  const std::string split = std::to_string(cores) + (cores == 1 ? " core / " : " cores / ") + std::to_string(ranks) +
                            (ranks == 1 ? " local rank" : " local ranks");
  if (!omp && !ob) {
    threads = std::to_string(share) + " thread" + (share > 1 ? "s" : "") + " per rank (" + split + ")";
  } else {
    threads = "threads per rank: OMP_NUM_THREADS=" + (omp ? std::to_string(omp) : "unset") +
              ", OPENBLAS_NUM_THREADS=" + (ob ? std::to_string(ob) : "unset") + " (yours; " + split + " would give " +
              std::to_string(share) + ")";
  }
  if (omp && omp * ranks > cores) threads += ", oversubscribed";
  // Two pools of several threads each: OpenMP's must not spin while OpenBLAS's run.
  const int omp_threads = omp ? omp : share, blas_threads = ob ? ob : omp_threads;
  if (facts.openblas && facts.blas_own_threads && omp_threads > 1 && blas_threads > 1) {
    if (env.count("OMP_WAIT_POLICY")) {
      threads += "; OMP_WAIT_POLICY=" + env.at("OMP_WAIT_POLICY") + " (yours)";
    } else {
      t.set.emplace_back("OMP_WAIT_POLICY", "PASSIVE");
      threads += "; OMP_WAIT_POLICY=PASSIVE (OpenBLAS has threads of its own: OpenMP's must not spin)";
    }
  }

  std::string malloc_note;
  if (facts.glibc) {
    // Each of ours the user's GLIBC_TUNABLES does not name is appended. Both matter: an mmap
    // threshold alone (the user's or ours) turns glibc's dynamic trim threshold off, and at its
    // default of 128 KiB every step gave its memory back and faulted it in again (tpipe train's
    // GPT on 2 ranks: 140 ms steps against 63).
    auto it = env.find("GLIBC_TUNABLES");
    const std::string mine = it == env.end() ? "" : it->second;
    std::string added, kept;
    for (const auto& [name, value, what] : kMallocTunables) {
      if (mine.find(std::string(name) + "=") != std::string::npos) {
        kept += std::string(kept.empty() ? "" : ", ") + "your " + what;
        continue;
      }
      added += std::string(added.empty() ? "" : ":") + name + "=" + value;
    }
    if (added.empty()) {
      malloc_note = "; malloc tunables yours";
    } else {
      t.set.emplace_back("GLIBC_TUNABLES", mine.empty() ? added : mine + ":" + added);
      malloc_note = kept.empty() ? "; malloc keeps freed memory (GLIBC_TUNABLES mmap 32 MiB, trim 256 MiB)"
                                 : "; malloc keeps freed memory (GLIBC_TUNABLES " + added + " added; " + kept + " kept)";
    }
  }
  // Binding: consecutive blocks of the allowed CPUs, as many per rank as it has threads, when
  // they fit; never when the user said none or the threads would not fit.
  std::string bind_note;
  auto bind = env.find("TPIPE_CPU_BIND");
  const bool bind_off = bind != env.end() && (bind->second == "none" || bind->second == "0");
  const int per_rank = t.threads_per_rank;
  if (bind_off) {
    bind_note = "; ranks not bound to cores (TPIPE_CPU_BIND=" + bind->second + ")";
  } else if (!facts.cpus.empty() && static_cast<std::size_t>(ranks) * per_rank <= facts.cpus.size()) {
    for (int r = 0; r < ranks; ++r)
      t.cpus.emplace_back(facts.cpus.begin() + r * per_rank, facts.cpus.begin() + (r + 1) * per_rank);
    bind_note = "; each rank bound to " + std::to_string(per_rank) + (per_rank == 1 ? " core" : " cores") +
                " of its own";
    // A core of its own: waiting for a peer by polling keeps it (and its caches) warm.
    if (auto wait = env.find("TPIPE_WAIT"); wait != env.end()) {
      bind_note += ", TPIPE_WAIT=" + wait->second + " (yours)";
    } else {
      t.set.emplace_back("TPIPE_WAIT", "spin");
      bind_note += ", polling while it waits for a peer (TPIPE_WAIT=spin)";
    }
  }
  t.line = kernel + "; " + threads + malloc_note + bind_note;
  return t;
}

}  // namespace tpipe
