// Reading the live machine (see facts.h). OpenBLAS's functions are found with dlsym, never linked
// against.
#include "tpipe/machine/facts.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace tpipe {
namespace {

// A function of the BLAS the ranks will use: this process's own when it has one loaded (LibTorch
// pulls in the system BLAS), else the system BLAS that LibTorch will load in the ranks
// (libblas.so.3, which Debian's alternatives point at OpenBLAS or another), opened here only to
// ask it: `tpipe run` itself does not load LibTorch.
void* blas_symbol(const char* name) {
  if (void* f = dlsym(RTLD_DEFAULT, name)) return f;
  static void* const system_blas = dlopen("libblas.so.3", RTLD_LAZY | RTLD_LOCAL);
  return system_blas ? dlsym(system_blas, name) : nullptr;
}

template <class F>
F lookup(const char* name) {
  return reinterpret_cast<F>(blas_symbol(name));
}

std::set<std::string> read_cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flags.insert(w);
    break;  // every core reports the same flags
  }
  return flags;
}

// The CPUs this process may run on, in id order (empty when the affinity cannot be read).
std::vector<int> usable_cpus() {
  cpu_set_t set;
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

}  // namespace

MachineFacts read_machine_facts() {
  MachineFacts f;
  f.cpu_flags = read_cpu_flags();
  f.cpus = usable_cpus();
  const unsigned n = std::thread::hardware_concurrency();
  f.cores = !f.cpus.empty() ? static_cast<int>(f.cpus.size()) : n > 0 ? static_cast<int>(n) : 1;
#ifdef __GLIBC__
  f.glibc = true;
#else
  f.glibc = false;
#endif
  if (auto corename = lookup<char* (*)()>("openblas_get_corename")) {
    f.openblas = true;
    if (const char* name = corename()) f.blas_corename = name;
  }
  // 0: sequential, 1: its own pthreads, 2: OpenMP's threads (shared with LibTorch's pool).
  if (auto parallel = lookup<int (*)()>("openblas_get_parallel")) f.blas_own_threads = parallel() == 1;
  return f;
}

int set_blas_threads(int threads) {
  auto parallel = lookup<int (*)()>("openblas_get_parallel");
  auto get = lookup<int (*)()>("openblas_get_num_threads");
  auto set = lookup<void (*)(int)>("openblas_set_num_threads");
  if (!parallel || parallel() != 1 || !get || !set) return 0;
  const int before = get();
  set(threads);
  return before;
}

BlasInfo read_blas_info() {
  BlasInfo b;
  Dl_info info{};
  if (void* sgemm = blas_symbol("sgemm_"); sgemm && dladdr(sgemm, &info) && info.dli_fname)
    b.library = info.dli_fname;
  if (auto config = lookup<char* (*)()>("openblas_get_config"))
    if (const char* c = config()) b.config = c;
  return b;
}

std::map<std::string, std::string> environment_map() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const auto eq = entry.find('=');
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

RankTuning tune_local_ranks(int local_ranks) {
  return choose_rank_tuning(read_machine_facts(), local_ranks, environment_map());
}

}  // namespace tpipe
