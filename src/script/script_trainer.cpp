// The TorchScript front door's training loop (see script_trainer.h).
#include "tpipe/script/script_trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "script_parts.h"
#include "tpipe/checkpoint/tensor_file.h"
#include "tpipe/partition.h"
#include "tpipe/report.h"
#include "tpipe/script/script_data.h"
#include "tpipe/script/torchscript_layers.h"

namespace tpipe {
namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const ScriptTrainConfig& c, std::vector<at::Tensor> params) {
  if (c.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  if (c.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(params,
                                                 torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
}

// The learning rate of step `step` (from 1): constant, or PyTorch's CosineAnnealingLR with T_max =
// steps and eta_min = 0, stepped after each optimizer step (step 1 uses lr).
double learning_rate(const ScriptTrainConfig& c, int step) {
  if (c.lr_schedule == "constant") return c.lr;
  return c.lr * 0.5 * (1 + std::cos(3.141592653589793 * (step - 1) / c.steps));
}

std::string output(const ScriptTrainConfig& c, const std::string& chosen, const char* name) {
  if (chosen == "-") return "";
  return chosen.empty() ? c.out + "/" + name : chosen;
}

// Rank 0 writes the model file with every stage's weights, gathered through a checkpoint: the
// run's last one, or one saved for this alone (and removed after).
void export_model(const ScriptTrainConfig& c, PipelineEngine& engine, int rank, const std::string& saved) {
  const std::string dir = saved.empty() ? c.out + "/.export-checkpoint" : saved;
  if (saved.empty()) engine.save(dir);
  if (rank != 0) return;
  std::map<std::string, at::Tensor> weights;
  for (auto& [name, t] : checkpoint::checkpoint_weights(dir)) weights[name] = t;
  export_torchscript(c.model, weights, c.export_path, script_dtype(c));
  if (saved.empty()) std::filesystem::remove_all(dir);
}

}  // namespace

ScriptTrainSummary train_script(const ScriptTrainConfig& c, Communicator& comm,
                                const std::function<void(const TrainProgress&)>& progress,
                                const std::function<void(const std::string&)>& note,
                                const std::string& machine_json) {
  auto tell = [&](const std::string& line) {
    if (comm.rank() == 0 && note) note(line);
  };
  const auto dtype = script_dtype(c);
  const std::optional<std::string> resume = checkpoint_to_resume(c);
  const std::string root = checkpoint_root(c);
  ScriptData data = load_script_data(c.data);
  if (dtype) data = with_dtype(data, *dtype);
  EngineOptions o;
  o.schedule = c.schedule;
  o.chunks_per_rank = c.virtual_stages;
  o.microbatches = c.microbatches;
  o.dp = c.dp;
  o.pp = c.stages;
  o.partition = c.partition;
  o.checkpoint = c.checkpoint;
  if (c.clip > 0) o.clip_grad_norm = c.clip;
  o.skip_nonfinite = c.on_nonfinite == "skip";
  if (comm.rank() == 0 && partition_profiles_layers(c.partition))
    o.profile_sample = split_microbatches(data_batch(data, c.batch_size, 0).inputs, c.microbatches * c.dp)[0];
  ReportOptions ro{output(c, c.trace, "trace.json"), output(c, c.timeline, "timeline.svg"),
                   output(c, c.metrics, "metrics.jsonl"),
                   c.model + " · " + c.schedule + " · " + std::to_string(c.stages) + " stages x " +
                       std::to_string(c.dp) + " replicas · " + std::to_string(c.microbatches) + " micro-batches",
                   10};
  ro.fresh_metrics = !resume;
  ro.report_dir = c.out;
  ro.config_json = nlohmann::json(c).dump();
  ro.machine_json = machine_json;
  Reporter report(ro);
  o.record = report.needs_recording();
  PipelineEngine engine(layers_from_torchscript(c.model, dtype), script_loss(c),
                        [&](NamedParameters p) { return make_optimizer(c, p); }, comm, o);
  torch::manual_seed(c.seed + static_cast<std::uint64_t>(engine.replica()));  // dropout; a resume restores it
  if (partition_weighs_layers(c.partition)) tell("partition " + c.partition + ": layers per stage " +
                                                 to_string(engine.partition()));
  ScriptTrainSummary s;
  if (!resume && !root.empty())
    if (const std::string line = earlier_run_note(root); !line.empty()) tell(line);
  if (resume) {
    std::vector<int> cut;
    const CheckpointInfo info = resume_engine(engine, *resume, cut);
    s.first_step = static_cast<int>(info.step) + 1;
    tell(describe_resume(script_resume_rules(), nlohmann::json(c), info, cut));
    if (comm.rank() == 0 && !ro.metrics_path.empty()) trim_metrics(ro.metrics_path, s.first_step - 1);
  }
  s.last_step = c.stop_after > 0 ? c.stop_after : c.steps;
  const std::int64_t rows = data_batch(data, c.batch_size, 0).rows;
  double train_seconds = 0, bubble_sum = 0;
  int bubbles = 0;
  std::int64_t activation_peak = 0, memory_peak = 0;
  for (int step = s.first_step; step <= s.last_step; ++step) {
    const ScriptData b = data_batch(data, c.batch_size, step - 1);  // step k trains on slice k-1
    for (auto& group : engine.optimizer()->param_groups()) group.options().set_lr(learning_rate(c, step));
    StepResult r;
    try {
      r = engine.train_batch(b.inputs, b.targets);
    } catch (const NonFiniteError& e) {
      throw NonFiniteError(std::string(e.what()) + "; the run stops here, the weights of step " +
                           std::to_string(step - 1) + " intact (--on-nonfinite skip skips such steps instead)");
    }
    s.losses.push_back(r.loss);
    s.skipped_steps += r.skipped;
    activation_peak = std::max(activation_peak, r.activation_peak_bytes);
    memory_peak = std::max(memory_peak, r.memory_peak_bytes);
    train_seconds += r.step_seconds;
    StepFacts facts;
    facts.samples = b.rows;
    facts.learning_rate = learning_rate(c, step);
    const double bubble = report.on_step(engine, r, facts);
    if (bubble >= 0 && step > s.first_step) bubble_sum += bubble, ++bubbles;  // the first step warms up
    if (comm.rank() == 0 && progress)
      progress({step, c.steps, r.loss, std::nullopt, b.rows / r.step_seconds, "rows", train_seconds});
    if (!root.empty() && (step == s.last_step || (c.save_every > 0 && step % c.save_every == 0))) {
      const std::string state = trainer_state(script_resume_rules(), nlohmann::json(c), step,
                                              {{"batches_seen", step}, {"batch_size", c.batch_size}});
      tell(save_checkpoint(engine, root, state, c.keep, comm.rank(), s.checkpoint));
    }
  }
  report.finish(engine);
  if (!c.export_path.empty()) export_model(c, engine, comm.rank(), root.empty() ? "" : s.checkpoint);
  const int trained = s.last_step - s.first_step + 1;
  s.rows_per_s = trained > 0 && train_seconds > 0 ? static_cast<double>(rows) * trained / train_seconds : 0;
  s.bubble = bubbles > 0 ? bubble_sum / bubbles : -1;
  s.activation_peak_bytes = comm.world().all_gather(activation_peak, "activation peaks for the summary");
  s.memory_peak_bytes = comm.world().all_gather(memory_peak, "memory peaks for the summary");
  return s;
}

}  // namespace tpipe
