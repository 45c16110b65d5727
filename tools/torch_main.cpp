// `tpipe-torch`: the commands of `tpipe` that need LibTorch. Users call `tpipe`, which execs this
// program for them; tpipe train's ranks are this program too (/proc/self/exe). Any error becomes
// one line and exit 1.
#include <iostream>
#include <string>

#include "commands.h"
#include "tpipe/launcher.h"

int main(int argc, char** argv) {
  const std::string cmd = argc < 2 ? "" : argv[1];
  try {
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
  std::cerr << "tpipe-torch: unknown command '" << cmd << "'; run `tpipe --help`\n";
  return 2;
}
