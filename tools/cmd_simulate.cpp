// `tpipe simulate`: generate, validate and simulate a schedule; print a table or JSON. Ranks may
// hold several stages (--virtual-stages): the header names the placement, the grid and the SVG
// draw one row per rank.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/util/files.h"
#include "tpipe/util/huge_heap.h"
#include "tpipe/schedule/compute_sim.h"
#include "tpipe/schedule/dp_cost.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/trace/record.h"
#include "tpipe/trace/svg.h"

namespace tpipe::cli {
namespace {

// F,B[,COMM] for schedules that run whole backwards; F,B,W[,COMM] for those that split them.
Costs parse_costs(const std::string& text, bool split) {
  const char* form = split ? "F,B,W[,COMM] such as 1,1,1" : "F,B[,COMM] such as 1,2";
  Costs c;
  std::vector<double> v;
  std::stringstream in(text);
  for (std::string tok; std::getline(in, tok, ',');) {
    try {
      std::size_t used = 0;
      v.push_back(std::stod(tok, &used));
      if (used != tok.size() || !std::isfinite(v.back())) throw std::invalid_argument(tok);
    } catch (const std::exception&) {
      throw ConfigError("--costs '" + text + "': expected " + form + " (numbers)");
    }
  }
  const std::size_t n = split ? 3 : 2;
  if (v.size() < n || v.size() > n + 1 || std::any_of(v.begin(), v.end(), [](double x) { return x < 0; }))
    throw ConfigError("--costs '" + text + "': expected " + form + " (non-negative numbers)");
  c.forward = v[0];
  c.backward = v[1];
  if (split) c.weight = v[2];
  if (v.size() == n + 1) c.comm = v[n];
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

// "4 stages" with one stage per rank; "8 stages on 4 ranks (rank 0: 0 4, rank 1: 1 5, ...)"
// when ranks hold several: every rank up to 8, else the first three and the last.
std::string placement(const Schedule& s) {
  std::string out = std::to_string(s.num_stages()) + (s.num_stages() == 1 ? " stage" : " stages");
  if (s.num_stages() == s.num_ranks()) return out;
  out += " on " + std::to_string(s.num_ranks()) + (s.num_ranks() == 1 ? " rank (" : " ranks (");
  const int R = s.num_ranks();
  for (int r = 0; r < R; ++r) {
    if (R > 8 && r == 3) out += ", ...", r = R - 1;
    out += (r == 0 ? "rank " : ", rank ") + std::to_string(r) + ":";
    for (int st : s.stages_of(r)) out += " " + std::to_string(st);
  }
  return out + ")";
}

// What the bubble would be in theory, for the line under the header.
std::string ideal_bubble(const std::string& schedule, const Schedule& s, bool split) {
  const double p = s.num_ranks(), m = s.num_microbatches, v = static_cast<double>(s.num_stages()) / s.num_ranks();
  if (schedule == "zb-v")
    return "ZB-V with F = B = W: at best (p-1)/(6m+p-1) = " + percent((p - 1) / (6 * m + p - 1));
  if (schedule == "interleaved-1f1b")
    return "ideal for m >= p (p-1)/(vm+p-1) = " + percent((p - 1) / (v * m + p - 1));
  if (split) return "ZB-H1 with F = B = W and m >= p: (p-1)/(3m+p-1) = " + percent((p - 1) / (3 * m + p - 1));
  return "ideal (p-1)/(m+p-1) = " + percent((p - 1) / (m + p - 1));
}

// The gradient bytes each pipeline rank holds: the model's, split evenly over the stages.
std::vector<double> bytes_per_rank(const Schedule& s, double model_bytes) {
  std::vector<double> out(s.num_ranks(), 0.0);
  for (int st = 0; st < s.num_stages(); ++st) out[s.rank_of(st)] += model_bytes / s.num_stages();
  return out;
}

std::string seconds(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, x >= 1 ? "%.3g s" : x >= 1e-3 ? "%.3g ms" : "%.3g us",
                x >= 1 ? x : x >= 1e-3 ? x * 1e3 : x * 1e6);
  return buf;
}

}  // namespace

int simulate_main(int argc, char** argv) {
  CLI::App app{"Plan a pipeline schedule: validate it and simulate its timing", "tpipe simulate"};
  std::string schedule = "1f1b", costs_text;
  int ranks = 4, microbatches = 8, virtual_stages = 0, dp = 1;
  double grad_bytes = 0;
  Network net;
  bool json = false;
  std::string svg_path;
  app.add_option("--schedule", schedule,
                 "naive | gpipe | 1f1b | zb-h1 | interleaved-1f1b | zb-v, or a file of actions (one line per rank)")
      ->capture_default_str();
  app.add_option("--stages,-p", ranks,
                 "number of pipeline ranks; each holds one stage, or --virtual-stages with interleaved-1f1b and zb-v")
      ->capture_default_str();
  app.add_option("--virtual-stages", virtual_stages,
                 "stages per rank (0: the schedule's default, 2 for interleaved-1f1b and zb-v, 1 otherwise; zb-v "
                 "takes exactly 2)")
      ->capture_default_str();
  app.add_option("--microbatches,-m", microbatches, "micro-batches per mini-batch")->capture_default_str();
  app.add_option("--costs", costs_text,
                 "time of one micro-batch's forward,backward[,comm] (default 1,2); for a schedule that splits "
                 "backwards (zb-h1) forward,input-backward,weight-backward[,comm] (default 1,1,1); seconds with --dp");
  app.add_option("--dp", dp, "data-parallel replicas: adds each pipeline rank's ring all-reduce of its gradients "
                             "(ranks = stages x dp; --costs are then seconds)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--grad-bytes", grad_bytes, "gradient bytes of the whole model, split evenly over the stages (--dp)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--bandwidth", net.bandwidth, "bytes/s each rank sends and receives in the all-reduce (--dp)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--latency", net.latency, "seconds per step of the ring all-reduce (--dp)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_flag("--json", json, "print one JSON object instead of a table");
  app.add_option("--svg", svg_path, "also write the planned timeline as an SVG picture to FILE")->type_name("FILE");
  app.footer("Plans up to " + std::to_string(kMaxStageMicrobatches) + " stage micro-batches (stages x micro-batches) "
             "are checked with every message and drawn (grid, --svg, --json's actions); larger ones, up to " +
             std::to_string(kMaxComputeStageMicrobatches) + ", are simulated from their compute actions and "
             "summarised.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int v = virtual_stages == 0 ? default_chunks(schedule) : virtual_stages;
  const double size = static_cast<double>(ranks) * v * microbatches;
  const bool readable = size <= static_cast<double>(kMaxStageMicrobatches);
  if (!readable && size <= static_cast<double>(kMaxComputeStageMicrobatches))
    reserve_huge_heap(compute_schedule_bytes(static_cast<long long>(size)));
  const Schedule s = readable ? make_schedule(schedule, ranks, microbatches, virtual_stages)
                              : compute_schedule(schedule, ranks, microbatches, virtual_stages);
  bool split = false;
  for (const auto& rank : s.ranks)
    for (const Action& a : rank) split = split || a.op == Op::Weight;
  const Costs costs = parse_costs(costs_text.empty() ? (split ? "1,1,1" : "1,2") : costs_text, split);
  const SimResult r = readable ? simulate(s, costs) : simulate_compute(s, costs);
  const double planned_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string left_out = readable ? "" :
      "the per-rank table, the grid, --svg and --json's actions are left out: they are for plans up to " +
      std::to_string(kMaxStageMicrobatches) + " stage micro-batches, this one has " +
      std::to_string(static_cast<long long>(size));
  if (!readable && !svg_path.empty()) throw ConfigError("--svg: " + left_out);
  const DpStep d = dp_step(r, bytes_per_rank(s, grad_bytes), dp, net);

  if (!svg_path.empty()) {
    const std::string dot = " \u00b7 ";
    trace::TimelineStyle style;
    style.title = schedule + dot + std::to_string(s.num_stages()) + (s.num_stages() == 1 ? " stage" : " stages") +
                  (s.num_stages() == s.num_ranks()
                       ? std::string()
                       : " on " + std::to_string(s.num_ranks()) + (s.num_ranks() == 1 ? " rank" : " ranks")) +
                  dot +
                  std::to_string(microbatches) + (microbatches == 1 ? " micro-batch" : " micro-batches") + dot +
                  "planned (F=" + number(costs.forward) + ", B=" + number(costs.backward) +
                  (split ? ", W=" + number(costs.weight) : std::string()) +
                  (costs.comm > 0 ? ", comm=" + number(costs.comm) : std::string()) + ")";
    write_file_atomic(svg_path, trace::render_timeline_svg(trace::from_simulation(s, r, 1000.0), style));
  }

  if (json) {
    nlohmann::json j;
    j["schedule"] = schedule;
    j["stages"] = s.num_stages();
    j["ranks"] = s.num_ranks();
    j["placement"] = s.stage_rank;  // stage -> rank
    j["microbatches"] = microbatches;
    j["costs"] = {{"forward", costs.forward}, {"backward", costs.backward}, {"comm", costs.comm}};
    if (split) j["costs"]["weight"] = costs.weight;
    j["makespan"] = r.makespan;
    j["bubble"] = r.bubble;
    j["bubble_per_rank"] = r.bubble_per_rank;
    j["peak_inflight_per_rank"] = r.peak_inflight_per_rank;
    if (dp > 1)
      j["dp"] = {{"replicas", dp},         {"ranks", s.num_ranks() * dp}, {"grad_bytes", grad_bytes},
                 {"bandwidth", net.bandwidth}, {"latency", net.latency},  {"allreduce_s", d.allreduce},
                 {"step_s", d.step},           {"allreduce_share", d.allreduce_share}};
    if (readable) {
      nlohmann::json actions = nlohmann::json::array();
      for (int rank = 0; rank < s.num_ranks(); ++rank) {
        nlohmann::json row = nlohmann::json::array();
        for (const Action& a : s.compute_actions(rank)) row.push_back(to_string(a));
        actions.push_back(row);
      }
      j["actions"] = actions;
    } else {
      j["left_out"] = left_out;
    }
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << schedule << ": " << placement(s) << ", " << microbatches << " micro-batches, costs F=" << costs.forward
            << " B=" << costs.backward << (split ? " W=" + number(costs.weight) : std::string()) << "\n"
            << "makespan " << r.makespan << ", bubble " << percent(r.bubble) << " ("
            << ideal_bubble(schedule, s, split) << ")\n";
  if (dp > 1)
    std::cout << "data parallel: " << dp << " replicas, " << s.num_ranks() * dp << " ranks; ring all-reduce of "
              << number(grad_bytes / s.num_stages()) << " bytes a stage at " << number(net.bandwidth)
              << " bytes/s, " << seconds(net.latency) << " a step: " << seconds(d.allreduce) << " at most\n"
              << "step " << seconds(d.step) << ": pipeline " << seconds(d.pipeline) << ", all-reduce not hidden "
              << percent(d.allreduce_share) << " of the step (rank " << d.slowest_rank << " ends it)\n";
  if (!readable) {
    long long actions = 0;
    for (const auto& list : s.ranks) actions += static_cast<long long>(list.size());
    const auto most = std::max_element(r.peak_inflight_per_rank.begin(), r.peak_inflight_per_rank.end());
    std::cout << "bubble per rank " << percent(*std::min_element(r.bubble_per_rank.begin(), r.bubble_per_rank.end()))
              << " to " << percent(*std::max_element(r.bubble_per_rank.begin(), r.bubble_per_rank.end()))
              << "; peak in-flight at most " << *most << " (rank " << most - r.peak_inflight_per_rank.begin()
              << ")\nplanned in " << seconds(planned_s) << " from " << actions << " compute actions\n(" << left_out
              << ")\n";
    return 0;
  }
  std::cout << "\nrank  bubble  peak in-flight\n";
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
