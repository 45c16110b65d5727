// The configuration of the TorchScript front door: every check that needs no rank, and the rules
// for continuing a checkpoint (see script_trainer.h).
#include <cmath>

#include "script_parts.h"
#include "tpipe/error.h"
#include "tpipe/partition.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/script/script_data.h"
#include "tpipe/script/script_trainer.h"
#include "tpipe/script/torchscript_layers.h"
#include "tpipe/train/run_checkpoints.h"

namespace tpipe {
namespace {

void require(bool ok, const std::string& why) {
  if (!ok) throw ConfigError(why);
}

}  // namespace

const ResumeRules& script_resume_rules() {
  static const ResumeRules r{
      "tpipe train-script",
      {{"model", "--model"},
       {"data", "--data"},
       {"loss", "--loss"},
       {"optimizer", "--optimizer"},
       {"dtype", "--dtype"},
       {"batch_size", "--batch-size"},
       {"seed", "--seed"},
       {"lr_schedule", "--lr-schedule"}},
      "a resumed run needs the same model, data, loss, optimizer, --dtype, --batch-size, --seed and --lr-schedule",
      "the learning-rate schedule is a function of --steps",
      {{"lr", "--lr"}, {"clip", "--clip"}, {"momentum", "--momentum"}, {"weight_decay", "--weight-decay"}}};
  return r;
}

std::optional<at::ScalarType> script_dtype(const ScriptTrainConfig& c) {
  if (c.dtype.empty()) return std::nullopt;
  if (c.dtype == "float32") return at::kFloat;
  if (c.dtype == "float64") return at::kDouble;
  throw ConfigError("--dtype must be float32 or float64, got '" + c.dtype + "'");
}

LossFn script_loss(const ScriptTrainConfig& c) {
  // "FILE.pt" or "FILE.pt:method": a scripted loss; otherwise one of PyTorch's by name.
  const auto colon = c.loss.rfind(':');
  const std::string file = colon == std::string::npos ? c.loss : c.loss.substr(0, colon);
  if (file.size() > 3 && file.compare(file.size() - 3, 3, ".pt") == 0)
    return colon == std::string::npos ? loss_from_torchscript(file) : loss_from_torchscript(file, c.loss.substr(colon + 1));
  return loss_by_name(c.loss);
}

std::string checkpoint_root(const ScriptTrainConfig& c) {
  if (c.checkpoints == "-") return "";
  return c.checkpoints.empty() ? c.out : c.checkpoints;
}

std::optional<std::string> checkpoint_to_resume(const ScriptTrainConfig& c) {
  return checkpoint_to_resume(c.resume, checkpoint_root(c), script_resume_rules(), nlohmann::json(c));
}

void check_script_config(const ScriptTrainConfig& c) {
  require(!c.model.empty() && !c.data.empty(), "--model FILE.pt and --data FILE.pt are needed");
  require(c.optimizer == "sgd" || c.optimizer == "adam" || c.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + c.optimizer + "'");
  require(c.lr_schedule == "constant" || c.lr_schedule == "cosine",
          "--lr-schedule must be constant or cosine, got '" + c.lr_schedule + "'");
  require(c.on_nonfinite == "stop" || c.on_nonfinite == "skip",
          "--on-nonfinite must be stop or skip, got '" + c.on_nonfinite + "'");
  require(c.stages >= 1 && c.dp >= 1 && c.microbatches >= 1 && c.steps >= 1,
          "--stages, --dp, --microbatches and --steps must be at least 1");
  require(c.stages * static_cast<std::int64_t>(c.dp) <= 256, "--stages x --dp is more than 256 ranks");
  require(c.save_every >= 0 && c.keep >= 0 && c.stop_after >= 0, "--save-every, --keep and --stop-after must be >= 0");
  require(c.stop_after <= c.steps, "--stop-after " + std::to_string(c.stop_after) + " is after --steps " +
                                       std::to_string(c.steps));
  require(std::isfinite(c.lr) && c.lr > 0, "--lr must be a positive number");
  require(std::isfinite(c.timeout) && c.timeout > 0, "--timeout must be a positive number of seconds");
  require(std::isfinite(c.clip) && std::isfinite(c.momentum) && std::isfinite(c.weight_decay) && c.clip >= 0 &&
              c.momentum >= 0 && c.weight_decay >= 0,
          "--clip, --momentum and --weight-decay must be >= 0");
  const auto dtype = script_dtype(c);
  const auto layers = layers_from_torchscript(c.model, dtype);
  const ScriptData d = load_script_data(c.data);
  const ScriptData first = data_batch(d, c.batch_size, 0);
  require(first.rows >= c.microbatches * c.dp,
          "a step's " + std::to_string(first.rows) + " rows cannot make " + std::to_string(c.microbatches) +
              " micro-batches x " + std::to_string(c.dp) + " replicas (each needs at least one row)");
  script_loss(c);
  const Schedule s = make_schedule(c.schedule, c.stages, c.microbatches, c.virtual_stages);
  require(s.num_stages() <= static_cast<int>(layers.size()),
          std::to_string(s.num_stages()) + " stages are more than the model's " + std::to_string(layers.size()) +
              " layers (its top-level children)");
  check_partition_method(c.partition, static_cast<int>(layers.size()), s.num_stages());
  checkpoint_to_resume(c);
}

}  // namespace tpipe
