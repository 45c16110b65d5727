// The worker modes of tpipe_bench: each runs one configuration of W1 and returns what it measured
// as JSON (the orchestrator prints the table).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "w1.h"

namespace bench {

// One process, the whole batch at once: {"step_s"}.
nlohmann::json run_single(const Workload& w);

// One process, the m micro-batches one after another, each through the two stages' halves of the
// model as the pipeline would run them: {"step_s", "compute_ms": {"0F","0B","1F","1B"}} with the
// mean time of each (stage, op) over micro-batches (what a pipeline action of that kind should take).
nlohmann::json run_serial(const Workload& w);

// tpipe over the ranks of `tpipe run`: timed steps, then one recorded step analysed on rank 0:
// {"step_s", "peak_bytes", "reduce_s", "bubble_measured", "bubble_predicted", "comm_ms",
//  "compute_ms": {...}, "record_cost"}.
// With a `timeline` path, rank 0 also draws the last recorded step there (SVG).
nlohmann::json run_pipe(const Workload& w, const std::string& schedule, int dp, const std::string& timeline = "");

// The machine as a rank sees it: {"line", "gemm_gflops", "kernel"}.
nlohmann::json run_doctor();

}  // namespace bench
