// The subcommands of the `tpipe` tool. Each parses its own arguments into a config and calls the
// library; it returns the process exit code. Errors reach main() as exceptions.
#pragma once

namespace tpipe::cli {

int run_main(int argc, char** argv);       // tpipe run -n N -- PROGRAM ARGS...
int simulate_main(int argc, char** argv);  // tpipe simulate --schedule S --stages P --microbatches M
int train_main(int argc, char** argv);     // tpipe train [--stages P --dp D ...]
int doctor_main(int argc, char** argv);    // tpipe doctor [--ranks N] [--json]
int checkpoint_main(int argc, char** argv);  // tpipe checkpoint info DIR | export DIR OUT.pt
int partition_main(int argc, char** argv);   // tpipe partition --stages P --partition METHOD [model flags]
int plan_main(int argc, char** argv);
int train_script_main(int argc, char** argv);  // tpipe train-script --model M.pt --data D.pt --loss NAME        // tpipe plan --ranks N [--memory-per-rank SIZE] [model flags]

}  // namespace tpipe::cli
