// The subcommands of the `tpipe` tool. Each parses its own arguments into a config and calls the
// library; it returns the process exit code. Errors reach main() as exceptions. `run`,
// `simulate` and `report` need no LibTorch and live in `tpipe` itself; the others live in
// `tpipe-torch`.
#pragma once

#include <string>

namespace tpipe::cli {

// In `tpipe` (tpipe_core only):
int run_main(int argc, char** argv);       // tpipe run -n N -- PROGRAM ARGS...
int simulate_main(int argc, char** argv);  // tpipe simulate --schedule S --stages P --microbatches M
int report_main(int argc, char** argv);    // tpipe report DIR [DIR2 ...] [--out FILE]

// In `tpipe-torch`:
int train_main(int argc, char** argv);         // tpipe train [--stages P --dp D ...]
int doctor_main(int argc, char** argv);        // tpipe doctor [--ranks N] [--json]
int checkpoint_main(int argc, char** argv);    // tpipe checkpoint info DIR | export DIR OUT.pt
int partition_main(int argc, char** argv);     // tpipe partition --stages P --partition METHOD [model flags]
int plan_main(int argc, char** argv);          // tpipe plan --ranks N [--memory-per-rank SIZE] [model flags]
int train_script_main(int argc, char** argv);  // tpipe train-script --model M.pt --data D.pt --loss NAME

// Whether `tpipe` hands `command` to `tpipe-torch`.
inline bool is_torch_command(const std::string& command) {
  for (const char* c : {"train", "doctor", "checkpoint", "partition", "plan", "train-script"})
    if (command == c) return true;
  return false;
}

}  // namespace tpipe::cli
