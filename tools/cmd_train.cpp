// `tpipe train`: the main job. Parses flags (over an optional --config JSON file) into a
// TrainConfig, checks it before any rank starts, launches stages x dp local ranks of itself
// (`tpipe train --worker CONFIG`), shows rank 0's progress as a bar, and ends with a generated
// sample and a summary. The files (trace, timeline, metrics) land in --out.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "gpt_profile.h"
#include "model_flags.h"
#include "worker_ranks.h"
#include "tpipe/checkpoint/inspect.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/doctor.h"
#include "tpipe/train/gpt_trainer.h"
#include "tpipe/util/files.h"

namespace tpipe::cli {
namespace {

int run_rank(const TrainConfig& c, const CharCorpus& corpus, Communicator& comm, const DoctorReport& machine) {
  const TrainSummary s = train_gpt(
      c, corpus, comm,
      [](const TrainProgress& p) {
        nlohmann::json j{{"step", p.step}, {"steps", p.steps}, {"loss", number(p.loss)}, {"rate", p.per_second},
                         {"unit", p.unit}, {"elapsed", p.elapsed_s}};
        if (p.val_loss) j["val"] = number(*p.val_loss);
        report_progress(j);
      },
      report_note, machine_json(machine));
  if (comm.rank() == 0) {
    nlohmann::json j{{"val_losses", s.val_losses}, {"unigram", s.unigram_entropy}, {"tok_s", s.tokens_per_s},
                     {"bubble", s.bubble}, {"sample", s.sample}, {"vocab", corpus.vocab_size()},
                     {"flops_per_token", s.flops_per_token}, {"peak_gflops", machine.gemm_gflops},
                     {"kernel", machine.facts.blas_corename},
                     {"source", corpus.source()}, {"train_tokens", corpus.train_tokens()},
                     {"last_step", s.last_step}, {"checkpoint", s.checkpoint}, {"skipped", s.skipped_steps},
                     {"activation_peak_bytes", s.activation_peak_bytes}, {"memory_peak_bytes", s.memory_peak_bytes}};
    report_summary(j);
  }
  return 0;
}

int run_worker(const std::string& config_json) {
  TrainConfig c;
  update_from_json(c, nlohmann::json::parse(config_json));
  const CharCorpus corpus = CharCorpus::load(c.data);
  return run_worker_rank("tpipe train", c.timeout, [&](Communicator& comm, const DoctorReport& machine) {
    return run_rank(c, corpus, comm, machine);
  });
}

void print_summary(const nlohmann::json& s, const TrainConfig& c) {
  if (!s["sample"].get<std::string>().empty())
    std::cout << "\n--- sample (temperature 0.8) ---\n" << s["sample"].get<std::string>() << "\n---\n";
  std::cout << "\n";
  const auto& val = s["val_losses"];
  std::printf("corpus            %s, %lld training characters, %d symbols\n",
              s["source"].get<std::string>().c_str(), s["train_tokens"].get<long long>(), s["vocab"].get<int>());
  if (!val.empty())
    std::printf("validation loss   %.3f nats (step %d); unigram entropy %.3f nats\n", number(val.back()[1]),
                val.back()[0].get<int>(), s["unigram"].get<double>());
  std::printf("throughput        %.0f tokens/s over %d ranks (%d stages x %d %s)\n", s["tok_s"].get<double>(),
              c.stages * c.dp, c.stages, c.dp, c.dp == 1 ? "replica" : "replicas");
  const double gflops = s["tok_s"].get<double>() * s["flops_per_token"].get<double>() / 1e9;
  const int ranks = c.stages * c.dp;
  std::printf("compute           %.1f GFLOP/s, %.1f per rank; the measured peak is %.0f GFLOP/s per rank "
              "(GEMM 1024^3, %s kernel)\n",
              gflops, gflops / ranks, s["peak_gflops"].get<double>(), s["kernel"].get<std::string>().c_str());
  print_run_end(s, c.steps, c.checkpoint, {c.out, c.trace, c.timeline, c.metrics});
}

}  // namespace

int train_main(int argc, char** argv) {
  CLI::App app{"Train a small GPT (output projection tied to the embedding) on the King James Bible, pipelined "
               "over local ranks",
               "tpipe train"};
  TrainConfig f;  // flag values; only those given override the config file
  std::string config_file, worker;
  std::vector<std::pair<CLI::Option*, std::function<void(TrainConfig&)>>> given;
  auto opt = [&](const char* name, auto TrainConfig::*member, const char* help) {
    given.push_back({app.add_option(name, f.*member, help)->capture_default_str(),
                     [&f, member](TrainConfig& c) { c.*member = f.*member; }});
  };
  layout_flags(opt);
  opt("--dp", &TrainConfig::dp, "data-parallel replicas (ranks = stages x dp)");
  opt("--plan", &TrainConfig::plan,
      "auto: run the layout tpipe plan finds fastest on stages x dp ranks (same global batch, the machine's "
      "memory shared among them), instead of the layout flags");
  model_flags(opt);
  opt("--steps", &TrainConfig::steps, "optimizer steps");
  opt("--lr", &TrainConfig::lr, "learning rate");
  opt("--optimizer", &TrainConfig::optimizer, "sgd | adam | adamw");
  opt("--clip", &TrainConfig::clip, "global gradient-norm clipping (0: off)");
  opt("--seed", &TrainConfig::seed, "seed of the weights, the batches and the sample");
  given.back().first->check(CLI::Validator(  // "-1" would wrap around
      [](std::string& v) { return v.rfind('-', 0) == 0 ? "a non-negative integer is needed, got " + v : ""; },
      "UINT"));
  opt("--out", &TrainConfig::out, "directory for the trace, timeline and metrics");
  opt("--trace", &TrainConfig::trace, "Chrome trace file (default OUT/trace.json; - for none)");
  opt("--timeline", &TrainConfig::timeline, "SVG timeline file (default OUT/timeline.svg; - for none)");
  opt("--metrics", &TrainConfig::metrics, "JSON-lines metrics file (default OUT/metrics.jsonl; - for none)");
  opt("--eval-every", &TrainConfig::eval_every, "steps between validation losses");
  opt("--eval-batches", &TrainConfig::eval_batches, "validation batches per evaluation");
  opt("--sample-chars", &TrainConfig::sample_chars, "characters to generate at the end");
  opt("--checkpoints", &TrainConfig::checkpoints, "checkpoint directory (default: --out; - for none)");
  opt("--save-every", &TrainConfig::save_every, "also save a checkpoint every K steps (0: only at the end)");
  opt("--keep", &TrainConfig::keep, "keep the newest N checkpoints (0: all)");
  opt("--resume", &TrainConfig::resume, "continue from a checkpoint (or its directory); auto: the newest one in "
                                        "the checkpoint directory, if any");
  opt("--stop-after", &TrainConfig::stop_after, "end after this step with a checkpoint, as a job with a time limit "
                                                "must (the schedule stays that of --steps)");
  opt("--on-nonfinite", &TrainConfig::on_nonfinite,
      "stop | skip: a NaN or infinite loss or gradient norm stops the run (naming the step), or skips that step");
  opt("--timeout", &TrainConfig::timeout, "seconds a rank waits for another before the run fails naming it");
  app.add_option("--config", config_file, "JSON file with the same keys (seq_len, ...); flags override it");
  NodeFlags nodes;
  add_node_flags(app, nodes);
  app.add_option("--worker", worker, "(internal) run one rank with this JSON config")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!worker.empty()) return run_worker(worker);

  TrainConfig c;
  if (!config_file.empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(config_file, ec))
      throw ConfigError("--config " + config_file + " is a directory; give a JSON file");
    std::ifstream in(config_file);
    if (!in) throw ConfigError("cannot read --config " + config_file);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const nlohmann::json::exception& e) {
      // nlohmann's text starts with its own "[json.exception.parse_error.101] ".
      std::string why = e.what();
      if (why.rfind("[json.exception.", 0) == 0 && why.find("] ") != std::string::npos) why.erase(0, why.find("] ") + 2);
      throw ConfigError("--config " + config_file + " is not valid JSON: " + why);
    }
    update_from_json(c, j);
  }
  for (auto& [o, apply] : given)
    if (o->count() > 0) apply(c);
  check_train_config(c);
  if (c.plan == "auto") {
    CharCorpus::load(c.data).check_fits(c.seq_len);
    std::printf("tpipe train: plan auto: timing the model's layers, probing %d ranks and racing the closest "
                "layouts (about a minute) ...\n",
                c.stages * c.dp);
    std::fflush(stdout);
    const std::string chose = apply_best_layout(c);
    std::printf("tpipe train: %s\n", chose.c_str());
    check_train_config(c);
  }
  // A corpus that is missing, not text, or too short for --seq-len fails here, before any rank starts.
  CharCorpus::load(c.data).check_fits(c.seq_len);
  // So does a checkpoint this run cannot continue, or one with a damaged file.
  const auto lock = prepare_run_directories("tpipe train", checkpoint_to_resume(c), c.out, checkpoint_root(c));

  std::string tuning_line;
  LaunchOptions lo = node_launch(nodes, c.stages * c.dp, tuning_line);  // the config bounds the product
  lo.command = {"/proc/self/exe", "train", "--worker", to_json(c).dump()};
  std::printf("tpipe train: GPT %d blocks x %d wide, %d stages x %d %s, %s, %d micro-batches of %d x %d "
              "characters, %d steps\n",
              c.layers, c.dim, c.stages, c.dp, c.dp == 1 ? "replica" : "replicas", c.schedule.c_str(),
              c.microbatches, c.microbatch_size, c.seq_len, c.steps);
  return run_training_command("tpipe train", lo, tuning_line, [&](const nlohmann::json& s) { print_summary(s, c); });
}

}  // namespace tpipe::cli
