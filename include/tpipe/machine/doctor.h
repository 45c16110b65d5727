// `tpipe doctor` and the one line every run prints: the BLAS in use and its kernel, the CPU's
// instruction sets, cores, LibTorch's intra-op threads and a measured GEMM rate, which is the
// peak that the achieved GFLOP/s of a training step is compared with.
#pragma once

#include <string>

#include "tpipe/machine/facts.h"

namespace tpipe {

struct DoctorReport {
  MachineFacts facts;
  BlasInfo blas;
  int intra_op_threads = 1;
  int gemm_n = 1024;
  double gemm_gflops = 0;  // float32 n x n x n matrix product, best of a few, this process's threads
};

// Measures in this process, with its current threads and BLAS kernel.
DoctorReport examine_machine(int gemm_n = 1024);

// GFLOP/s of an n x n x n float32 matrix product (best of `repeats` after one warm-up).
double measure_gemm_gflops(int n, int repeats = 5);

// "BLAS OpenBLAS (SkylakeX kernel), CPU AVX-512, 2 cores, 1 intra-op thread, 1024^3 GEMM 141 GFLOP/s"
std::string summary_line(const DoctorReport& r);

// The full report, several lines.
std::string full_report(const DoctorReport& r);

}  // namespace tpipe
