// Pieces of the run report shared by the page and the file reading (see tpipe/report/page.h).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tpipe/report/page.h"

namespace tpipe::report {

// The last metrics line with a measured bubble (null when none has one).
nlohmann::json last_measured(const std::vector<nlohmann::json>& steps);

// An SVG document as a data: URI (base64), for an <img> the page's policy allows.
std::string svg_data_uri(const std::string& svg);

// "12.3%".
std::string percent(double share);

// "steps 1 to 200 · loss 2.31 · validation 2.40 · 41.2k tokens/s · bubble 18.0%": what each
// run's files say of it, for the line under the title.
std::string summary_line(const RunFiles& run);

// A two-column table of an object's keys and values (strings as they are, the rest as JSON).
std::string key_value_table(const std::string& caption, const nlohmann::json& object);

}  // namespace tpipe::report
