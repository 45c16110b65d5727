// The `tpipe` command: dispatches to a subcommand; turns any error into one line and exit 1.
#include <iostream>
#include <string>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/launcher.h"

namespace {

const char* kUsage =
    "usage: tpipe COMMAND [ARGS...]\n"
    "  run       start N local ranks of a program:  tpipe run -n N -- PROGRAM ARGS...\n"
    "  simulate  plan a schedule:  tpipe simulate --schedule 1f1b --stages 4 --microbatches 8\n"
    "  train     train a small GPT on the King James Bible, pipelined:  tpipe train --stages 2\n"
    "  train-script  train a PyTorch model saved as TorchScript:  tpipe train-script --model m.pt --data d.pt\n"
    "  doctor    the BLAS kernel, threads and GEMM rate a rank gets here:  tpipe doctor --ranks 2\n"
    "  checkpoint  inspect or export a checkpoint:  tpipe checkpoint info out/train\n"
    "  partition   cut tpipe train's GPT by a method, with measured costs:  tpipe partition --stages 4\n"
    "  plan        the best layouts of tpipe train's GPT on N ranks:  tpipe plan --ranks 4 --memory-per-rank 2GiB\n"
    "Run `tpipe COMMAND --help` for the options of a command.\n";

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
    if (cmd == "train") return tpipe::cli::train_main(argc - 1, argv + 1);
    if (cmd == "doctor") return tpipe::cli::doctor_main(argc - 1, argv + 1);
    if (cmd == "checkpoint") return tpipe::cli::checkpoint_main(argc - 1, argv + 1);
    if (cmd == "partition") return tpipe::cli::partition_main(argc - 1, argv + 1);
    if (cmd == "plan") return tpipe::cli::plan_main(argc - 1, argv + 1);
    if (cmd == "train-script") return tpipe::cli::train_script_main(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    // When this process is a rank (tpipe train's workers are), the launcher learns when it failed,
    // so that it blames this rank rather than a peer that failed because of it.
    tpipe::report_rank_failure(e.what());
    std::cerr << "tpipe " << cmd << ": " << e.what() << "\n";
    return 1;
  }
  std::cerr << "tpipe: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}
