// The `tpipe` command. Planning and launching need no LibTorch, and loading it costs most of a
// second, so this front answers `run`, `simulate` and `report` itself and hands every other command to its
// LibTorch half, `tpipe-torch` beside it, by exec (same arguments, same process). Any error
// becomes one line and exit 1.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/facts.h"

namespace {

const char* kUsage =
    "usage: tpipe COMMAND [ARGS...]\n"
    "  run       start N local ranks of a program:  tpipe run -n N -- PROGRAM ARGS...\n"
    "  simulate  plan a schedule:  tpipe simulate --schedule 1f1b --stages 4 --microbatches 8\n"
    "  train     train a small GPT on the King James Bible, pipelined:  tpipe train --stages 2\n"
    "  train-script  train a PyTorch model saved as TorchScript:  tpipe train-script --model m.pt --data d.pt\n"
    "  report    a run's page of curves and timelines, or several runs compared:  tpipe report out/train\n"
    "  doctor    the BLAS kernel, threads and GEMM rate a rank gets here:  tpipe doctor --ranks 2\n"
    "  checkpoint  inspect or export a checkpoint:  tpipe checkpoint info out/train\n"
    "  partition   cut tpipe train's GPT by a method, with measured costs:  tpipe partition --stages 4\n"
    "  plan        the best layouts of tpipe train's GPT on N ranks:  tpipe plan --ranks 4 --memory-per-rank 2GiB\n"
    "Run `tpipe COMMAND --help` for the options of a command.\n";

// The commands that time layers in their own process (tpipe plan and partition) get the BLAS
// kernel and malloc thresholds a rank gets, which only count when set before the process starts:
// a profile taken under other settings mispredicts the ranks (without the malloc thresholds the
// first block's backward measured 3x the others' here: page faults). The tuning never replaces
// the user's values (its GLIBC_TUNABLES keeps theirs). Threads are the profile's own business (it
// sets them as a rank among its ranks gets them), but OpenMP's wait policy is read only at start:
// with 2 threads each in LibTorch's pool and OpenBLAS's, a spinning pool made a block's backward
// 10x slower. tpipe train is left alone: it tunes its ranks itself and says so, and would take
// these for the user's.
void tune_like_a_rank(const std::string& cmd) {
  if (cmd != "plan" && cmd != "partition") return;
  for (const auto& [name, value] : tpipe::tune_local_ranks(1).set)
    if (name == "OPENBLAS_CORETYPE" || name == "GLIBC_TUNABLES" || name == "OMP_WAIT_POLICY")
      setenv(name.c_str(), value.c_str(), 1);
}

// Replaces this process with `tpipe-torch`, found next to this program, with the same arguments.
[[noreturn]] void exec_torch_half(char** argv) {
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
  const std::string half = (self.parent_path() / "tpipe-torch").string();
  std::vector<char*> args(argv, argv + 1);
  while (*++argv) args.push_back(*argv);
  args.push_back(nullptr);
  args[0] = const_cast<char*>(half.c_str());
  execv(half.c_str(), args.data());
  throw tpipe::Error("cannot start " + half + " (the LibTorch half of tpipe, built and installed with it): " +
                     std::strerror(errno));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "run") return tpipe::cli::run_main(argc - 1, argv + 1);
    if (cmd == "simulate") return tpipe::cli::simulate_main(argc - 1, argv + 1);
    if (cmd == "report") return tpipe::cli::report_main(argc - 1, argv + 1);
    if (tpipe::cli::is_torch_command(cmd)) {
      tune_like_a_rank(cmd);
      exec_torch_half(argv);
    }
  } catch (const std::exception& e) {
    // When this process is a rank (of another tpipe run), the launcher learns when it failed, so
    // that it blames this rank rather than a peer that failed because of it.
    tpipe::report_rank_failure(e.what());
    std::cerr << "tpipe " << cmd << ": " << e.what() << "\n";
    return 1;
  }
  std::cerr << "tpipe: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}
