// `tpipe train-script`: trains a model written in PyTorch and saved as TorchScript, pipelined over
// local ranks, on data saved with torch.save (tpipe::train_script on each rank). Its defaults are a
// plain PyTorch loop's, so that loop is the reference; --export writes the trained model back as
// one TorchScript file.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "commands.h"
#include "worker_ranks.h"
#include "tpipe/launcher.h"
#include "tpipe/script/script_trainer.h"

namespace tpipe::cli {
namespace {

int run_rank(const ScriptTrainConfig& c, Communicator& comm, const DoctorReport& machine) {
  const ScriptTrainSummary s = train_script(
      c, comm,
      [](const TrainProgress& p) {
        report_progress({{"step", p.step}, {"steps", p.steps}, {"loss", number(p.loss)}, {"rate", p.per_second},
                         {"unit", p.unit}, {"elapsed", p.elapsed_s}});
      },
      report_note, machine_json(machine));
  if (comm.rank() == 0)
    report_summary({{"loss", s.losses.empty() ? nlohmann::json() : number(s.losses.back())},
                    {"rows_s", s.rows_per_s}, {"bubble", s.bubble}, {"checkpoint", s.checkpoint},
                    {"last_step", s.last_step}, {"skipped", s.skipped_steps},
                    {"activation_peak_bytes", s.activation_peak_bytes}, {"memory_peak_bytes", s.memory_peak_bytes}});
  return 0;
}

void print_summary(const nlohmann::json& s, const ScriptTrainConfig& c) {
  std::printf("final loss        %.6g\n", number(s["loss"]));
  std::printf("throughput        %.0f rows/s over %d %s (%d %s x %d %s)\n", s["rows_s"].get<double>(),
              c.stages * c.dp, c.stages * c.dp == 1 ? "rank" : "ranks", c.stages, c.stages == 1 ? "stage" : "stages",
              c.dp, c.dp == 1 ? "replica" : "replicas");
  if (!c.export_path.empty()) std::printf("exported          %s\n", c.export_path.c_str());
  print_run_end(s, c.steps, c.checkpoint, {c.out, c.trace, c.timeline, c.metrics});
}

}  // namespace

int train_script_main(int argc, char** argv) {
  CLI::App app{"Train a model saved with torch.jit.script(model).save(FILE) (its top-level children are the layers) "
               "on data saved with torch.save((inputs, targets), FILE), pipelined over local ranks. The defaults "
               "are a plain PyTorch loop's: constant learning rate, no clipping, no weight decay, the file's dtype",
               "tpipe train-script"};
  ScriptTrainConfig c;
  std::string worker;
  auto opt = [&](const char* name, auto& into, const char* help) {
    return app.add_option(name, into, help)->capture_default_str();
  };
  opt("--model", c.model, "TorchScript file of the model")->required();
  opt("--data", c.data, "torch.save file: (inputs, targets) or {\"inputs\", \"targets\"}")->required();
  opt("--loss", c.loss, "cross_entropy | mse | nll, or FILE.pt[:METHOD] with a scripted loss");
  opt("--stages", c.stages, "pipeline stages");
  opt("--dp", c.dp, "data-parallel replicas (ranks = stages x dp)");
  opt("--microbatches", c.microbatches, "micro-batches per replica and step");
  opt("--schedule", c.schedule, "naive | gpipe | 1f1b | zb-h1 | interleaved-1f1b | zb-v, or a file");
  opt("--virtual-stages", c.virtual_stages, "stages per rank (0: the schedule's own)");
  opt("--partition", c.partition, "uniform, 2,3,1, parameters, type:REGEX or profile");
  opt("--checkpoint", c.checkpoint, "activation checkpointing: always | except_last | never");
  opt("--steps", c.steps, "optimizer steps");
  opt("--batch-size", c.batch_size, "rows a step, consecutive slices of the data (0: all of it)");
  opt("--lr", c.lr, "learning rate");
  opt("--lr-schedule", c.lr_schedule, "constant | cosine (PyTorch's CosineAnnealingLR over --steps, to 0)");
  opt("--optimizer", c.optimizer, "sgd | adam | adamw");
  opt("--momentum", c.momentum, "SGD momentum");
  opt("--weight-decay", c.weight_decay, "weight decay");
  opt("--clip", c.clip, "global gradient-norm clipping (0: off)");
  opt("--dtype", c.dtype, "float32 | float64: the floating-point weights and data are converted to it "
                          "(default: as in the files)");
  opt("--seed", c.seed, "seed of the random draws (dropout); replica r uses seed + r")
      ->check(CLI::Validator(  // "-1" would wrap around
          [](std::string& v) { return v.rfind('-', 0) == 0 ? "a non-negative integer is needed, got " + v : ""; },
          "UINT"));
  opt("--out", c.out, "directory for the metrics, trace, timeline and checkpoints");
  opt("--trace", c.trace, "Chrome trace file (default OUT/trace.json; - for none)");
  opt("--timeline", c.timeline, "SVG timeline file (default OUT/timeline.svg; - for none)");
  opt("--metrics", c.metrics, "JSON-lines metrics file (default OUT/metrics.jsonl; - for none)");
  opt("--checkpoints", c.checkpoints, "checkpoint directory (default: --out; - for none)");
  opt("--save-every", c.save_every, "also save a checkpoint every K steps (0: only at the end)");
  opt("--keep", c.keep, "keep the newest N checkpoints (0: all)");
  opt("--resume", c.resume, "continue from a checkpoint (or its directory); auto: the newest in the checkpoint "
                            "directory, if any");
  opt("--stop-after", c.stop_after, "end after this step with a checkpoint (the schedule stays that of --steps)");
  opt("--on-nonfinite", c.on_nonfinite, "stop | skip a step whose loss or gradient norm is not finite");
  opt("--export", c.export_path, "write the trained model as one TorchScript file");
  opt("--timeout", c.timeout, "seconds a rank waits for another before the run fails naming it");
  NodeFlags nodes;
  add_node_flags(app, nodes);
  app.add_option("--worker", worker, "(internal) run one rank with this JSON config")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!worker.empty()) {
    const auto wc = nlohmann::json::parse(worker).get<ScriptTrainConfig>();
    return run_worker_rank("tpipe train-script", wc.timeout,
                           [&](Communicator& comm, const DoctorReport& machine) { return run_rank(wc, comm, machine); });
  }
  check_script_config(c);
  const auto lock = prepare_run_directories("tpipe train-script", checkpoint_to_resume(c), c.out, checkpoint_root(c));
  std::string tuning_line;
  LaunchOptions lo = node_launch(nodes, c.stages * c.dp, tuning_line);  // the config bounds the product
  lo.command = {"/proc/self/exe", "train-script", "--model", c.model, "--data", c.data,
                "--worker", nlohmann::json(c).dump()};
  std::printf("tpipe train-script: %s on %s, %d %s x %d %s, %s, %d micro-batches, %d steps\n", c.model.c_str(),
              c.data.c_str(), c.stages, c.stages == 1 ? "stage" : "stages", c.dp, c.dp == 1 ? "replica" : "replicas",
              c.schedule.c_str(), c.microbatches, c.steps);
  return run_training_command("tpipe train-script", lo, tuning_line, [&](const nlohmann::json& s) { print_summary(s, c); });
}

}  // namespace tpipe::cli
