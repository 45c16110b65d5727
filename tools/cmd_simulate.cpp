// `tpipe simulate`: generate, validate and simulate a schedule; print a table or JSON.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/util/files.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/record.h"
#include "tpipe/trace/svg.h"

namespace tpipe::cli {
namespace {

Costs parse_costs(const std::string& text) {
  Costs c;
  std::vector<double> v;
  std::stringstream in(text);
  for (std::string tok; std::getline(in, tok, ',');) {
    try {
      std::size_t used = 0;
      v.push_back(std::stod(tok, &used));
      if (used != tok.size()) throw std::invalid_argument(tok);
    } catch (const std::exception&) {
      throw ConfigError("--costs '" + text + "': expected F,B such as 1,2 (numbers)");
    }
  }
  if (v.size() < 2 || v.size() > 3 || v[0] < 0 || v[1] < 0)
    throw ConfigError("--costs '" + text + "': expected F,B[,COMM] with non-negative numbers such as 1,2");
  c.forward = v[0];
  c.backward = v[1];
  if (v.size() == 3) c.comm = v[2];
  return c;
}

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

std::string number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

}  // namespace

int simulate_main(int argc, char** argv) {
  CLI::App app{"Plan a pipeline schedule: validate it and simulate its timing", "tpipe simulate"};
  std::string schedule = "1f1b", costs_text = "1,2";
  int stages = 4, microbatches = 8;
  bool json = false;
  std::string svg_path;
  app.add_option("--schedule", schedule, "naive | gpipe | 1f1b")->capture_default_str();
  app.add_option("--stages,-p", stages, "number of pipeline stages (one per rank)")->capture_default_str();
  app.add_option("--microbatches,-m", microbatches, "micro-batches per mini-batch")->capture_default_str();
  app.add_option("--costs", costs_text, "forward,backward[,comm] time of one micro-batch")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of a table");
  app.add_option("--svg", svg_path, "also write the planned timeline as an SVG picture to FILE")->type_name("FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const Costs costs = parse_costs(costs_text);
  const Schedule s = make_schedule(schedule, stages, microbatches);
  const SimResult r = simulate(s, costs);

  if (!svg_path.empty()) {
    const std::string dot = " \u00b7 ";
    trace::TimelineStyle style;
    style.title = schedule + dot + std::to_string(stages) + (stages == 1 ? " stage" : " stages") + dot +
                  std::to_string(microbatches) + (microbatches == 1 ? " micro-batch" : " micro-batches") + dot +
                  "planned (F=" + number(costs.forward) + ", B=" + number(costs.backward) +
                  (costs.comm > 0 ? ", comm=" + number(costs.comm) : std::string()) + ")";
    write_file_atomic(svg_path, trace::render_timeline_svg(trace::from_simulation(s, r, 1000.0), style));
  }

  if (json) {
    nlohmann::json j;
    j["schedule"] = schedule;
    j["stages"] = stages;
    j["microbatches"] = microbatches;
    j["costs"] = {{"forward", costs.forward}, {"backward", costs.backward}, {"comm", costs.comm}};
    j["makespan"] = r.makespan;
    j["bubble"] = r.bubble;
    j["bubble_per_rank"] = r.bubble_per_rank;
    j["peak_inflight_per_rank"] = r.peak_inflight_per_rank;
    nlohmann::json actions = nlohmann::json::array();
    for (int rank = 0; rank < s.num_ranks(); ++rank) {
      nlohmann::json row = nlohmann::json::array();
      for (const Action& a : s.compute_actions(rank)) row.push_back(to_string(a));
      actions.push_back(row);
    }
    j["actions"] = actions;
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << schedule << ": " << stages << " stages, " << microbatches << " micro-batches, costs F=" << costs.forward
            << " B=" << costs.backward << "\n"
            << "makespan " << r.makespan << ", bubble " << percent(r.bubble) << " (ideal (p-1)/(m+p-1) = "
            << percent(static_cast<double>(stages - 1) / (microbatches + stages - 1)) << ")\n\n"
            << "rank  bubble  peak in-flight\n";
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    char line[64];
    std::snprintf(line, sizeof line, "%4d  %6s  %14d\n", rank, percent(r.bubble_per_rank[rank]).c_str(),
                  r.peak_inflight_per_rank[rank]);
    std::cout << line;
  }
  const double unit = std::min(costs.forward, costs.backward) > 0 ? std::min(costs.forward, costs.backward) : 1.0;
  const std::string chart = render_chart(r, unit);
  if (!chart.empty()) std::cout << "\n" << chart;
  return 0;
}

}  // namespace tpipe::cli
