// `tpipe plan`: the best layouts of tpipe train's GPT on N ranks within a memory limit, from the
// measured costs of its layers (plan.h); with --measure, the best and the default layout are run
// with tpipe train and their measured step times printed beside the predictions.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "commands.h"
#include "comm_probe.h"
#include "gpt_profile.h"
#include "model_flags.h"
#include "plan_trials.h"
#include "tpipe/error.h"
#include "tpipe/models/gpt.h"
#include "tpipe/plan.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::cli {
namespace {

// "2GiB", "512MiB", "1.5G", "800M", "1000000" (bytes); "" or "none": no limit.
double parse_bytes(const std::string& text) {
  if (text.empty() || text == "none") return INFINITY;
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const std::pair<const char*, double> units[] = {{"", 1},           {"B", 1},          {"K", 1024.0},
                                                  {"KiB", 1024.0},   {"M", 1 << 20},    {"MiB", 1 << 20},
                                                  {"G", 1 << 30},    {"GiB", 1 << 30},  {"T", 1099511627776.0},
                                                  {"TiB", 1099511627776.0}};
  for (const auto& [name, scale] : units)
    if (used > 0 && unit == name && std::isfinite(v) && v > 0) return v * scale;
  throw ConfigError("--memory-per-rank '" + text + "': expected a size such as 2GiB, 512MiB or 1e9");
}

double mib(double bytes) { return bytes / (1 << 20); }

// The race (plan_trials.h): the model ranks layouts that differ by less than its error alike (on
// 4 ranks sharing 2 cores it put three layouts within 1 % that ran 84, 86 and 100 ms), so the
// layouts predicted within 10 % of the best are run, 2 alternating rounds each.
constexpr int kRaceEntrants = 3, kRaceSteps = 10, kRaceRounds = 2;
constexpr double kRaceMargin = 0.10;

std::vector<double> run_race(const TrainConfig& c, std::vector<Layout>& layouts, int entrants, double margin,
                             int steps) {
  const std::size_t n = race_field(layouts, entrants, margin);
  if (n < 2) return {};
  std::printf("\nracing the %zu layouts predicted within %g %% of the best with tpipe train, %d alternating rounds of "
              "%d steps each (after %d that warm up) ...\n",
              n, 100 * margin, kRaceRounds, steps, kWarmupSteps);
  std::fflush(stdout);
  return race(c, layouts, n, kRaceRounds, steps);
}

// tpipe train's own layout on these ranks: every rank a stage, 1f1b, 4 micro-batches, uniform.
Layout default_layout(const PlanRequest& request) {
  Layout d;
  d.pp = request.ranks;
  d.microbatches = 4;
  d.schedule = "1f1b";
  d.partition_method = "uniform";
  d.checkpoint = "never";
  return predict_layout(request, d);
}

// What a request for request.ranks ranks measures: the model's profile (scaled to the engine)
// and what the probe found on that many ranks of this machine.
GptProfile profile_and_probe(const TrainConfig& c, int repeats, PlanRequest& request) {
  GptProfile profile = profile_gpt(c, request.ranks, repeats);
  const RankProbe probe = probe_ranks(request.ranks, profile.cores, c);
  request.layers = profile.layers;
  request.layers_fewer_rows = profile.layers_fewer_rows;
  request.cores = profile.cores;
  request.optimizer_s_per_weight_byte = profile.optimizer_s_per_weight_byte;
  request.tied_bytes = profile.tied_bytes;
  request.record_every_step = true;  // tpipe train records every step for its metrics
  request.comm = probe.comm;
  request.compute_slowdown = probe.slowdown;
  return profile;
}

void print_row(const char* mark, const Layout& l, double measured_s, bool parts = true) {
  std::printf("%-8s %9.2f  %6.1f%%  %9.1f  %-4s %s", mark, 1e3 * l.step_s, 100 * l.bubble, mib(l.peak_memory_bytes),
              l.fits ? "yes" : "no", l.flags().c_str());
  if (measured_s > 0) std::printf("   measured %.2f ms (%+.0f%%)", 1e3 * measured_s, 100 * (l.step_s / measured_s - 1));
  std::printf("\n");
  if (measured_s > 0 && parts)
    std::printf("%-8s %9s  predicted: pipeline %.2f + all-reduce %.2f + step end %.2f + optimizer %.2f ms\n", "", "",
                1e3 * l.pipeline_s, 1e3 * l.allreduce_s, 1e3 * l.step_end_s, 1e3 * l.optimizer_s);
}

}  // namespace

std::string apply_best_layout(TrainConfig& c) {
  PlanRequest request;
  request.ranks = c.stages * c.dp;
  request.global_batch = c.microbatch_size * c.microbatches * c.dp;
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (memory > 0) request.memory_per_rank = memory / request.ranks;
  request.optimizer_bytes_per_weight_byte = c.optimizer == "sgd" ? 0 : 2;
  profile_and_probe(c, 3, request);
  std::vector<Layout> layouts = plan_layouts(request);
  const auto raced = race(c, layouts, race_field(layouts, kRaceEntrants, kRaceMargin), kRaceRounds, kRaceSteps);
  const Layout& best = layouts.front();
  c.stages = best.pp;
  c.dp = best.dp;
  c.microbatches = best.microbatches;
  c.microbatch_size = best.microbatch_rows;
  c.schedule = best.schedule;
  c.virtual_stages = best.chunks;
  c.partition = best.partition_method == kProfileUnderCap ? to_string(best.partition) : best.partition_method;
  c.checkpoint = best.checkpoint;
  c.plan.clear();
  char line[200];
  std::snprintf(line, sizeof line, " (predicted %.1f ms a step%s, %.1f MiB on the fullest rank%s)", 1e3 * best.step_s,
                raced.empty() ? "" : (", the fastest of " + std::to_string(raced.size()) + " raced").c_str(),
                mib(best.peak_memory_bytes), best.fits ? "" : "; no layout fits the memory");
  return "plan auto: " + best.flags() + line;
}

int plan_main(int argc, char** argv) {
  CLI::App app{"Search the layouts (stages x replicas, micro-batches, schedule, partition, activation "
               "checkpointing) of tpipe train's GPT on N ranks with its measured per-layer costs, the schedule "
               "simulator and a memory model; print the best",
               "tpipe plan"};
  TrainConfig c;
  int ranks = 2, global_batch = 0, top = 5, repeats = 3, steps = 0, race_entrants = kRaceEntrants,
      race_steps = kRaceSteps;
  double race_within = 100 * kRaceMargin;
  std::string memory = "none";
  auto opt = [&](const char* name, auto TrainConfig::*member, const char* help) {
    app.add_option(name, c.*member, help)->capture_default_str();
  };
  model_flags(opt);
  app.add_option("--ranks", ranks, "ranks to lay out (stages x replicas)")->capture_default_str()->check(
      CLI::Range(1, kMaxTrainRanks));
  app.add_option("--memory-per-rank", memory, "memory a rank may use (2GiB, 512MiB, ...; none: no limit)")
      ->capture_default_str();
  app.add_option("--global-batch", global_batch, "sequences per step (default: --microbatch-size x 4)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--top", top, "layouts to print")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--repeats", repeats, "micro-batches in flight when timing each layer")->capture_default_str()->check(
      CLI::Range(1, 1000));
  app.add_option("--race", race_entrants, "run the layouts (at most this many) predicted within --race-within of "
                                         "the best with tpipe train, 2 alternating rounds, and choose the fastest "
                                         "measured (0 or 1: the model's best)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--race-within", race_within, "percent of the best's prediction within which layouts race")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  const std::string warm = " (after " + std::to_string(kWarmupSteps) + " that warm up)";
  app.add_option("--race-steps", race_steps, "timed steps of each race run" + warm)
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--measure", steps, "also run the best and the default layout with tpipe train, in 3 alternating "
                                     "rounds of this many timed steps" + warm +
                                     ", and print their measured step times (medians)")
      ->check(CLI::Range(1, 100000));
  bool probe_worker = false;
  app.add_flag("--probe-worker", probe_worker, "(internal) run one rank of the communication probe")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (probe_worker) return comm_probe_worker(c);
  check_config(model_config(c, 2));
  PlanRequest request;
  request.ranks = ranks;
  request.global_batch = global_batch > 0 ? global_batch : c.microbatch_size * 4;
  request.memory_per_rank = parse_bytes(memory);
  const GptProfile profile = profile_and_probe(c, repeats, request);
  auto layouts = plan_layouts(request);
  std::printf("GPT %d blocks x %d wide, %d sequences of %d a step, on %d ranks%s; %zu layouts, costs measured on "
              "one micro-batch of %d (%d intra-op thread%s%s), scaled to the engine's own actions (F x%.2f, "
              "backward x%.2f, B x%.2f, W x%.2f)\n\n",
              c.layers, c.dim, request.global_batch, c.seq_len, ranks,
              std::isfinite(request.memory_per_rank) ? (" with " + memory + " each").c_str() : "", layouts.size(),
              c.microbatch_size, profile.threads, profile.threads == 1 ? "" : "s",
              ranks > profile.cores ? (", " + std::to_string(profile.cores) + " cores shared").c_str() : "",
              profile.calibration.forward, profile.calibration.backward, profile.calibration.input_grad,
              profile.calibration.weight_grad);
  if (request.comm.ranks > 0) {
    std::printf("communication measured on %d ranks: a message %.3f ms + %.2f GB/s", request.comm.ranks,
                1e3 * request.comm.point_to_point.latency_s, request.comm.point_to_point.bytes_per_s / 1e9);
    for (const auto& [g, cost] : request.comm.all_reduce)
      std::printf("; all-reduce of %d %.3f ms + %.2f GB/s", g, 1e3 * cost.latency_s, cost.bytes_per_s / 1e9);
    std::printf("; computing beside each other %.2fx slower than alone%s\n\n", request.compute_slowdown,
                ranks > profile.cores ? " and sharing the cores" : "");
  }
  std::printf("%-8s %9s  %7s  %9s  %-4s %s\n", "", "step ms", "bubble", "peak MiB", "fits", "tpipe train flags");
  for (int i = 0; i < std::min<int>(top, static_cast<int>(layouts.size())); ++i)
    print_row(i == 0 ? "best" : "", layouts[i], 0);
  if (race_entrants > 1) {
    const auto measured = run_race(c, layouts, race_entrants, race_within / 100, race_steps);
    if (!measured.empty())
      for (std::size_t i = 0; i < measured.size(); ++i) print_row(i == 0 ? "best" : "", layouts[i], measured[i], false);
  }
  const Layout fallback = default_layout(request);
  double best_s = 0, default_s = 0;
  if (steps > 0) {
    constexpr int kRounds = 3;
    std::printf("\nmeasuring with tpipe train, %d alternating rounds of %d steps each (after %d that warm up) ...\n",
                kRounds, steps, kWarmupSteps);
    const auto both = run_alternating(c, {layouts[0].flags(), fallback.flags()}, kRounds, steps);
    best_s = both[0];
    default_s = both[1];
    print_row("best", layouts[0], best_s);
  }
  print_row("default", fallback, default_s);
  std::printf("\nrun the best:  tpipe train %s\n", layouts[0].flags().c_str());
  return 0;
}

}  // namespace tpipe::cli
