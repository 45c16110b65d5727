// What the benchmark orchestrators share: running a child (a worker, or `tpipe run` of workers)
// and reading what it reports, and the environment every child gets.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace bench {

// Runs a command; returns the JSON objects it printed after "BENCH " (one per reporting rank), or
// nothing when it printed "BENCH-SKIP". Throws with its output when it failed or reported nothing.
std::optional<std::vector<nlohmann::json>> run_child(const std::string& cmd);

// Fills in what the benchmarks promise every child: one thread per rank, and the BLAS kernel that
// `tpipe run` would choose for 2 local ranks (set before the child loads OpenBLAS, which picks its
// kernel then). A variable the user set is kept. Returns the line saying what was chosen.
std::string tune_children();

// This program's path, for running itself as a child.
std::string self_path(const char* argv0);

// A child's main: runs `work` and prints its report as "BENCH {json}" (rank 0's, or a report
// without a rank); an error goes to stderr. Returns the exit code.
int report_child(const std::function<nlohmann::json()>& work);

}  // namespace bench
