// Recorded (or planned) steps as a Chrome trace-event document, for chrome://tracing and
// ui.perfetto.dev: one track per rank, a slice per action, arrows from each send to the
// receive that consumed it, and a counter of stashed activation bytes per rank.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tpipe/trace/record.h"

namespace tpipe::trace {

// {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}; events sorted by
// (pid, ts), metadata first. Times stay in microseconds, the format's unit.
nlohmann::json chrome_trace(const std::vector<StepTrace>& steps);

// The document above, one event per line, written atomically (write_file_atomic).
void write_chrome_trace(const std::string& path, const std::vector<StepTrace>& steps);

}  // namespace tpipe::trace
