// `tpipe doctor [--ranks N] [--json]`: what this machine gives a rank: the BLAS and its kernel, the
// CPU's instruction sets, cores, threads and a measured GEMM rate; then what `tpipe run` and
// `tpipe train` set for N local ranks, and the GEMM rate a rank gets with those settings (measured
// in a child process, since OpenBLAS reads its variables only when it loads).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/machine/doctor.h"

namespace tpipe::cli {
namespace {

// The GEMM rate of a child started with `vars` added to this environment.
double gemm_in_child(const RankTuning& t, int n) {
  std::string cmd = "env";
  for (const auto& [name, value] : t.set) cmd += " " + name + "=" + value;
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) throw Error("cannot find this program's path to start a child");
  cmd += " '" + std::string(self, static_cast<std::size_t>(len)) + "' doctor --gemm-only " + std::to_string(n);
  std::FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) throw Error("cannot start a child to measure the GEMM rate");
  double gflops = 0;
  const int got = std::fscanf(pipe, "%lf", &gflops);
  if (pclose(pipe) != 0 || got != 1) throw Error("the child measuring the GEMM rate failed: " + cmd);
  return gflops;
}

}  // namespace

int doctor_main(int argc, char** argv) {
  CLI::App app("Report the BLAS, its kernel, CPU, cores, threads and GEMM rate, and what tpipe run sets for "
               "N local ranks.",
               "tpipe doctor");
  int ranks = 2, gemm_n = 1024, gemm_only = 0;
  bool json = false;
  app.add_option("--ranks", ranks, "Local ranks to tune for")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--gemm", gemm_n, "Matrix size of the GEMM measurement")->capture_default_str()->check(
      CLI::Range(16, 4096));
  app.add_flag("--json", json, "Print one JSON object");
  app.add_option("--gemm-only", gemm_only, "(internal) print the GEMM rate of size N and exit")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (gemm_only > 0) {
    std::printf("%.3f\n", measure_gemm_gflops(gemm_only));
    return 0;
  }
  const DoctorReport here = examine_machine(gemm_n);
  const RankTuning tuning = tune_local_ranks(ranks);
  const double per_rank = gemm_in_child(tuning, gemm_n);
  if (json) {
    nlohmann::json set = nlohmann::json::object();
    for (const auto& [name, value] : tuning.set) set[name] = value;
    std::cout << nlohmann::json{{"blas_library", here.blas.library},
                                {"openblas", here.facts.openblas},
                                {"openblas_corename", here.facts.blas_corename},
                                {"cpu_isa", to_string(cpu_isa_level(here.facts.cpu_flags))},
                                {"cores", here.facts.cores},
                                {"intra_op_threads", here.intra_op_threads},
                                {"gemm_n", gemm_n},
                                {"gemm_gflops", here.gemm_gflops},
                                {"ranks", ranks},
                                {"rank_env", set},
                                {"rank_threads", tuning.threads_per_rank},
                                {"rank_gemm_gflops", per_rank},
                                {"choice", tuning.line}}
                     .dump()
              << "\n";
    return 0;
  }
  std::cout << full_report(here) << "\n";
  std::string set;
  for (const auto& [name, value] : tuning.set) set += " " + name + "=" + value;
  std::cout << "for " << ranks << " local rank" << (ranks == 1 ? "" : "s") << ", tpipe run and tpipe train set:"
            << (set.empty() ? " nothing" : set) << "\n  " << tuning.line << "\n";
  std::printf("GEMM per rank with those settings: %.1f GFLOP/s (%.2fx this process's)\n", per_rank,
              here.gemm_gflops > 0 ? per_rank / here.gemm_gflops : 0.0);
  return 0;
}

}  // namespace tpipe::cli
