// `tpipe run -n N [--nnodes K --node-rank R] [--master-addr A] [--master-port P] -- PROGRAM ARGS...`:
// the command-line face of tpipe::launch. It prints the ranks' prefixed lines on its own stdout
// and stderr and exits with the job's exit code, so that scripts see a failure of any rank.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/facts.h"

namespace tpipe::cli {

int run_main(int argc, char** argv) {
  LaunchOptions options;
  CLI::App app("Start N ranks of PROGRAM on this machine with the variables torchrun sets (RANK, WORLD_SIZE,\n"
               "LOCAL_RANK, MASTER_ADDR, MASTER_PORT, ...); stop all of them as soon as one fails.",
               "tpipe run");
  app.add_option("-n,--nproc-per-node", options.nproc, "Ranks (processes) to start on this node")->required();
  app.add_option("--nnodes", options.nnodes, "Nodes in the job; run tpipe run once per node")
      ->capture_default_str();
  app.add_option("--node-rank", options.node_rank, "This node's index in [0, nnodes)")->capture_default_str();
  app.add_option("--master-addr", options.master_addr, "Address of node 0, where rank 0 listens")
      ->capture_default_str();
  app.add_option("--master-port", options.master_port, "Port rank 0 listens on; 0 picks a free one (one node only)")
      ->capture_default_str();
  // Everything from PROGRAM on belongs to PROGRAM, even options that look like ours ("-n").
  app.prefix_command();
  app.footer("After the options: [--] PROGRAM ARGS..., started once per rank. Each output line is\n"
             "prefixed with [rank k]; the exit code is that of the rank that failed first (by the time\n"
             "it reported, see report_rank_failure in tpipe/launcher.h). SIGINT, SIGTERM and SIGHUP\n"
             "stop every rank; if tpipe run is killed outright, its ranks are killed with it.\n"
             "At most 8 ranks per core, and 256, on one machine.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // CLI11 stops at the first item it does not know and hands back the rest, "--" included.
  options.command = app.remaining();
  if (!options.command.empty() && options.command.front() == "--") {
    options.command.erase(options.command.begin());
  } else if (!options.command.empty() && options.command.front().rfind('-', 0) == 0) {
    throw ConfigError("unknown option '" + options.command.front() +
                      "'; if it is PROGRAM's, put PROGRAM ARGS... after '--'");
  }

  // A job this machine cannot start is refused before the tuning line, which lists every rank.
  check_launch_size(options.nproc, options.nnodes, options.node_rank, usable_cores());
  // The BLAS kernel and threads of the ranks, unless the user set them; one line says what and why.
  const RankTuning tuning = tune_local_ranks(options.nproc);
  options.env = tuning.set;
  options.cpus = tuning.cpus;
  if (!options.command.empty()) std::cerr << "tpipe run: " << tuning.line << std::endl;
  const LaunchResult result = launch(options, [](const std::string& line, bool is_stderr) {
    (is_stderr ? std::cerr : std::cout) << line << std::endl;
  });
  if (result.exit_code != 0) std::cerr << "tpipe run: " << result.message << std::endl;
  return result.exit_code;
}

}  // namespace tpipe::cli
