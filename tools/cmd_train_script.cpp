// `tpipe train-script`: trains a model written in PyTorch and saved as TorchScript, pipelined over
// local ranks, on data saved with torch.save. Its defaults are a plain PyTorch loop's (constant
// learning rate, no clipping, no weight decay), so that loop is the reference; --export writes the
// trained model back as one TorchScript file.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "worker_ranks.h"
#include "tpipe/checkpoint/tensor_file.h"
#include "tpipe/engine.h"
#include "tpipe/launcher.h"
#include "tpipe/machine/facts.h"
#include "tpipe/report.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/script/script_data.h"
#include "tpipe/script/torchscript_layers.h"

namespace tpipe::cli {
namespace {

struct ScriptConfig {
  std::string model, data, loss = "mse";
  int stages = 2, dp = 1, microbatches = 4, virtual_stages = 0, steps = 10;
  std::int64_t batch_size = 0;  // rows a step; 0: the whole data file
  std::string schedule = "1f1b", partition = "uniform", checkpoint = "never";
  double lr = 0.01, momentum = 0, weight_decay = 0, clip = 0, timeout = 300;
  std::string optimizer = "sgd", out = "out/train-script", metrics, export_path;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ScriptConfig, model, data, loss, stages, dp, microbatches, virtual_stages, steps,
                                   batch_size, schedule, partition, checkpoint, lr, momentum, weight_decay, clip,
                                   timeout, optimizer, out, metrics, export_path)

LossFn loss_of(const ScriptConfig& c) {
  // "FILE.pt" or "FILE.pt:method": a scripted loss; otherwise one of PyTorch's by name.
  const auto colon = c.loss.rfind(':');
  const std::string file = colon == std::string::npos ? c.loss : c.loss.substr(0, colon);
  if (file.size() > 3 && file.compare(file.size() - 3, 3, ".pt") == 0)
    return colon == std::string::npos ? loss_from_torchscript(file) : loss_from_torchscript(file, c.loss.substr(colon + 1));
  return loss_by_name(c.loss);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const ScriptConfig& c, std::vector<at::Tensor> params) {
  if (c.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  if (c.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(params,
                                                 torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
}

// Every check that needs no rank: the files load, the loss is known, the layout can be made.
void check(const ScriptConfig& c) {
  auto require = [](bool ok, const std::string& why) {
    if (!ok) throw ConfigError(why);
  };
  require(!c.model.empty() && !c.data.empty(), "--model FILE.pt and --data FILE.pt are needed");
  require(c.optimizer == "sgd" || c.optimizer == "adam" || c.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + c.optimizer + "'");
  require(c.stages >= 1 && c.dp >= 1 && c.microbatches >= 1 && c.steps >= 1,
          "--stages, --dp, --microbatches and --steps must be at least 1");
  require(std::isfinite(c.lr) && c.lr > 0, "--lr must be a positive number");
  require(c.clip >= 0 && c.momentum >= 0 && c.weight_decay >= 0, "--clip, --momentum and --weight-decay must be >= 0");
  const auto layers = layers_from_torchscript(c.model);
  const ScriptData d = load_script_data(c.data);
  data_batch(d, c.batch_size, 0);
  loss_of(c);
  const Schedule s = make_schedule(c.schedule, c.stages, c.microbatches, c.virtual_stages);
  require(s.num_stages() <= static_cast<int>(layers.size()),
          std::to_string(s.num_stages()) + " stages are more than the model's " + std::to_string(layers.size()) +
              " layers (its top-level children)");
  check_partition_method(c.partition, static_cast<int>(layers.size()), s.num_stages());
}

int run_rank(const ScriptConfig& c, Communicator& comm) {
  const ScriptData data = load_script_data(c.data);
  EngineOptions o;
  o.schedule = c.schedule;
  o.chunks_per_rank = c.virtual_stages;
  o.microbatches = c.microbatches;
  o.dp = c.dp;
  o.pp = c.stages;
  o.partition = c.partition;
  o.checkpoint = c.checkpoint;
  if (c.clip > 0) o.clip_grad_norm = c.clip;
  const ScriptData first = data_batch(data, c.batch_size, 0);
  if (comm.rank() == 0 && partition_profiles_layers(c.partition))
    o.profile_sample = split_microbatches(first.inputs, c.microbatches * c.dp)[0];
  ReportOptions ro{"", "", c.metrics.empty() ? c.out + "/metrics.jsonl" : c.metrics, "", 1};
  ro.fresh_metrics = true;
  Reporter report(ro);
  o.record = report.needs_recording();
  PipelineEngine engine(layers_from_torchscript(c.model), loss_of(c),
                        [&](NamedParameters p) { return make_optimizer(c, p); }, comm, o);
  const auto t0 = std::chrono::steady_clock::now();
  double last = 0;
  for (int step = 1; step <= c.steps; ++step) {
    const ScriptData b = data_batch(data, c.batch_size, step - 1);
    const StepResult r = engine.train_batch(b.inputs, b.targets);
    report.on_step(engine, r, b.rows);
    last = r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (comm.rank() == 0)
      report_progress({{"step", step}, {"steps", c.steps}, {"loss", number(r.loss)}, {"tok_s", 0.0}, {"elapsed", elapsed}});
  }
  if (!c.export_path.empty()) {
    const std::string dir = c.out + "/export-checkpoint";
    engine.save(dir);  // every stage's weights in one place
    if (comm.rank() == 0) {
      std::map<std::string, at::Tensor> weights;
      for (auto& [name, t] : checkpoint::checkpoint_weights(dir)) weights[name] = t;
      export_torchscript(c.model, weights, c.export_path);
    }
  }
  if (comm.rank() == 0) report_summary({{"loss", number(last)}, {"export", c.export_path}});
  return 0;
}

}  // namespace

int train_script_main(int argc, char** argv) {
  CLI::App app{"Train a model saved with torch.jit.script(model).save(FILE) (its top-level children are the layers) "
               "on data saved with torch.save((inputs, targets), FILE), pipelined over local ranks",
               "tpipe train-script"};
  ScriptConfig c;
  std::string worker;
  app.add_option("--model", c.model, "TorchScript file of the model")->required();
  app.add_option("--data", c.data, "torch.save file: (inputs, targets) or {\"inputs\", \"targets\"}")->required();
  app.add_option("--loss", c.loss, "cross_entropy | mse | nll, or FILE.pt[:METHOD] with a scripted loss")
      ->capture_default_str();
  app.add_option("--stages", c.stages, "pipeline stages")->capture_default_str();
  app.add_option("--dp", c.dp, "data-parallel replicas (ranks = stages x dp)")->capture_default_str();
  app.add_option("--microbatches", c.microbatches, "micro-batches per replica and step")->capture_default_str();
  app.add_option("--schedule", c.schedule, "naive | gpipe | 1f1b | zb-h1 | interleaved-1f1b | zb-v, or a file")
      ->capture_default_str();
  app.add_option("--virtual-stages", c.virtual_stages, "stages per rank (0: the schedule's own)")->capture_default_str();
  app.add_option("--partition", c.partition, "uniform, 2,3,1, parameters, type:REGEX or profile")->capture_default_str();
  app.add_option("--checkpoint", c.checkpoint, "activation checkpointing: always | except_last | never")
      ->capture_default_str();
  app.add_option("--steps", c.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "rows a step, consecutive slices of the data (0: all of it)")
      ->capture_default_str();
  app.add_option("--lr", c.lr, "learning rate (constant)")->capture_default_str();
  app.add_option("--optimizer", c.optimizer, "sgd | adam | adamw")->capture_default_str();
  app.add_option("--momentum", c.momentum, "SGD momentum")->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "weight decay")->capture_default_str();
  app.add_option("--clip", c.clip, "global gradient-norm clipping (0: off)")->capture_default_str();
  app.add_option("--out", c.out, "directory for metrics.jsonl")->capture_default_str();
  app.add_option("--metrics", c.metrics, "JSON-lines metrics file (default OUT/metrics.jsonl)");
  app.add_option("--export", c.export_path, "write the trained model as one TorchScript file");
  app.add_option("--timeout", c.timeout, "seconds a rank waits for another")->capture_default_str();
  app.add_option("--worker", worker, "(internal) run one rank with this JSON config")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!worker.empty()) {
    const ScriptConfig wc = nlohmann::json::parse(worker).get<ScriptConfig>();
    return run_worker_rank("tpipe train-script", wc.timeout, [&](Communicator& comm, const DoctorReport&) {
      return run_rank(wc, comm);
    });
  }
  check(c);
  std::filesystem::create_directories(c.out);
  LaunchOptions lo;
  lo.nproc = c.stages * c.dp;
  const RankTuning tuning = tune_local_ranks(lo.nproc);
  lo.env = tuning.set;
  lo.cpus = tuning.cpus;
  lo.command = {"/proc/self/exe", "train-script", "--model", c.model, "--data", c.data,
                "--worker", nlohmann::json(c).dump()};
  std::printf("tpipe train-script: %s on %s, %d stages x %d %s, %s, %d micro-batches, %d steps\n", c.model.c_str(),
              c.data.c_str(), c.stages, c.dp, c.dp == 1 ? "replica" : "replicas", c.schedule.c_str(), c.microbatches,
              c.steps);
  std::fflush(stdout);
  nlohmann::json summary;
  if (const int code = launch_worker_ranks("tpipe train-script", lo, summary); code != 0) return code;
  if (!summary.is_null()) {
    std::printf("final loss        %.6g\n", number(summary["loss"]));
    if (!c.export_path.empty()) std::printf("exported          %s\n", c.export_path.c_str());
  }
  return 0;
}

}  // namespace tpipe::cli
