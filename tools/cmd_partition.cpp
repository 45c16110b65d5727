// `tpipe partition`: the cut a method gives tpipe train's GPT, stage by stage, with the measured
// costs of its layers and the step the simulator predicts from them.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include "commands.h"
#include "gpt_profile.h"
#include "model_flags.h"
#include "tpipe/models/gpt.h"
#include "tpipe/plan.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::cli {
namespace {

double mib(double bytes) { return bytes / (1 << 20); }

// "embed..block1", or one name.
std::string layer_range(const std::vector<LayerFacts>& layers, int begin, int end) {
  return end - begin == 1 ? layers[begin].name : layers[begin].name + ".." + layers[end - 1].name;
}

Partition cut_of(const std::string& method, int stages, const std::vector<LayerFacts>& layers) {
  return partition_weighs_layers(method) ? partition_from_string(method, stages, layers)
                                         : partition_from_string(method, static_cast<int>(layers.size()), stages);
}

// The planner's prediction for this cut under tpipe train's layout.
Layout predict(const TrainConfig& c, const std::vector<LayerFacts>& layers, const Partition& cut) {
  PlanRequest request;
  request.layers = layers;
  request.ranks = c.stages;
  request.global_batch = c.microbatch_size * c.microbatches;
  Layout choice;
  choice.pp = c.stages;
  choice.microbatches = c.microbatches;
  choice.chunks = c.virtual_stages;
  choice.schedule = c.schedule;
  choice.checkpoint = c.checkpoint;
  choice.partition = cut;
  choice.partition_method = to_string(cut);
  return predict_layout(request, choice);
}

// Forward and backward of a micro-batch on the slowest stage.
double slowest_ms(const std::vector<LayerFacts>& layers, const Partition& cut) {
  double slowest = 0;
  for (int st = 0; st < cut.num_stages(); ++st) {
    double t = 0;
    for (int l = cut.begin(st); l < cut.end(st); ++l) t += layers[l].forward_s + layers[l].backward_s;
    slowest = std::max(slowest, 1e3 * t);
  }
  return slowest;
}

}  // namespace

int partition_main(int argc, char** argv) {
  CLI::App app{"Cut tpipe train's GPT into stages and show each stage's layers, parameters, measured time and "
               "activations, and the step the simulator predicts",
               "tpipe partition"};
  TrainConfig c;
  c.partition = "profile";
  int repeats = 3;
  auto opt = [&](const char* name, auto TrainConfig::*member, const char* help) {
    app.add_option(name, c.*member, help)->capture_default_str();
  };
  layout_flags(opt);
  model_flags(opt);
  app.add_option("--repeats", repeats, "micro-batches in flight when timing each layer (the median counts)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  check_config(model_config(c, 2));
  const Schedule s = make_schedule(c.schedule, c.stages, c.microbatches, c.virtual_stages);
  const int specs = c.layers + 4;
  check_partition_method(c.partition, specs, s.num_stages());

  const GptProfile profile = profile_gpt(c, c.stages, repeats);
  const auto& layers = profile.layers;
  const Partition cut = cut_of(c.partition, s.num_stages(), layers);
  std::printf("GPT %d blocks x %d wide (%d layers), %d stages on %d ranks, %s, %d micro-batches of %d x %d; "
              "--partition %s\n",
              c.layers, c.dim, specs, s.num_stages(), c.stages, c.schedule.c_str(), c.microbatches,
              c.microbatch_size, c.seq_len, c.partition.c_str());
  std::printf("measured on one micro-batch of %s, %d intra-op thread%s, median of %d in flight, scaled to the "
              "engine's own actions (F x%.2f, backward x%.2f)\n\n",
              profile.corpus.c_str(), profile.threads, profile.threads == 1 ? "" : "s", repeats,
              profile.calibration.forward, profile.calibration.backward);
  std::printf("stage  rank  layers                   parameters  forward ms  backward ms  activations MiB\n");
  for (int st = 0; st < cut.num_stages(); ++st) {
    double params = 0, f = 0, b = 0, act = 0;
    for (int l = cut.begin(st); l < cut.end(st); ++l) {
      params += static_cast<double>(layers[l].parameters);
      f += layers[l].forward_s;
      b += layers[l].backward_s;
      act += layers[l].activation_bytes;
    }
    std::printf("%5d  %4d  %-23s  %10.0f  %10.3f  %11.3f  %15.2f\n", st, s.rank_of(st),
                layer_range(layers, cut.begin(st), cut.end(st)).c_str(), params, 1e3 * f, 1e3 * b, mib(act));
  }
  const Layout p = predict(c, layers, cut);
  std::printf("\nslowest stage     %.3f ms a micro-batch (forward and backward)\n", slowest_ms(layers, cut));
  std::printf("predicted step    %.2f ms, bubble %.1f%%, memory %.1f MiB on the fullest rank (%d) (tpipe plan's "
              "model: the simulator with these costs, --checkpoint %s)\n",
              1e3 * p.step_s, 100 * p.bubble, mib(p.peak_memory_bytes), p.fullest_rank, c.checkpoint.c_str());
  if (c.partition != "uniform") {
    const Partition uniform = cut_of("uniform", s.num_stages(), layers);
    std::printf("uniform cut       %s: slowest stage %.3f ms, step %.2f ms\n", to_string(uniform).c_str(),
                slowest_ms(layers, uniform), 1e3 * predict(c, layers, uniform).step_s);
  }
  std::printf("cut               --partition %s\n", to_string(cut).c_str());
  return 0;
}

}  // namespace tpipe::cli
