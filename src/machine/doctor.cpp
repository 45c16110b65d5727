// Measuring this process's BLAS (see doctor.h).
#include "tpipe/machine/doctor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

namespace tpipe {
namespace {

std::string blas_name(const DoctorReport& r) {
  if (r.facts.openblas)
    return "OpenBLAS (" + (r.facts.blas_corename.empty() ? std::string("unknown") : r.facts.blas_corename) +
           " kernel)";
  return r.blas.library.empty() ? "no BLAS library found" : r.blas.library;
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

double measure_gemm_gflops(int n, int repeats) {
  at::NoGradGuard no_grad;
  const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::Tensor c = at::mm(a, b);  // warm-up: pages, kernel selection, threads
  double best = 1e30;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * static_cast<double>(n) / best / 1e9;
}

DoctorReport examine_machine(int gemm_n) {
  DoctorReport r;
  r.facts = read_machine_facts();
  r.blas = read_blas_info();
  r.intra_op_threads = at::get_num_threads();
  r.gemm_n = gemm_n;
  r.gemm_gflops = gemm_n > 0 ? measure_gemm_gflops(gemm_n) : 0.0;
  return r;
}

std::string summary_line(const DoctorReport& r) {
  std::string s = "BLAS " + blas_name(r) + ", CPU " + to_string(cpu_isa_level(r.facts.cpu_flags)) + ", " +
                  std::to_string(r.facts.cores) + (r.facts.cores == 1 ? " core, " : " cores, ") + std::to_string(r.intra_op_threads) + " intra-op thread" +
                  (r.intra_op_threads == 1 ? "" : "s");
  if (r.gemm_gflops > 0)
    s += ", " + std::to_string(r.gemm_n) + "^3 GEMM " + fixed(r.gemm_gflops, 0) + " GFLOP/s";
  return s;
}

std::string full_report(const DoctorReport& r) {
  std::ostringstream o;
  const IsaLevel cpu = cpu_isa_level(r.facts.cpu_flags);
  o << "BLAS library      " << (r.blas.library.empty() ? "(none loaded)" : r.blas.library) << "\n";
  if (r.facts.openblas) {
    o << "OpenBLAS          " << r.blas.config << "\n";
    o << "OpenBLAS kernel   " << r.facts.blas_corename << " (" << to_string(openblas_core_level(r.facts.blas_corename))
      << ")\n";
  } else {
    o << "OpenBLAS          not in use; the kernel is chosen by the BLAS above\n";
  }
  std::string isa;
  for (const char* f : {"sse3", "pni", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx512_bf16", "amx_tile"})
    if (r.facts.cpu_flags.count(f)) isa += std::string(isa.empty() ? "" : " ") + f;
  o << "CPU               " << to_string(cpu) << " (" << (isa.empty() ? "no flags read" : isa) << ")\n";
  o << "cores             " << r.facts.cores << " usable by this process\n";
  o << "intra-op threads  " << r.intra_op_threads << " (LibTorch)\n";
  if (r.gemm_gflops > 0)
    o << "GEMM              " << fixed(r.gemm_gflops, 1) << " GFLOP/s (float32, " << r.gemm_n << "^3, best of 5)\n";
  return o.str();
}

}  // namespace tpipe
