// The GPT training job (see gpt_trainer.h).
#include "tpipe/train/gpt_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include "gpt_checkpoints.h"
#include "tpipe/engine.h"
#include "tpipe/models/gpt.h"
#include "tpipe/partition.h"
#include "tpipe/report.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/train/run_checkpoints.h"

namespace tpipe {
namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainConfig& c, const NamedParameters& params) {
  if (c.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(c.lr).momentum(0.9));
  if (c.optimizer == "adam") return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(c.lr));
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& [name, p] : params)
    (p.dim() >= 2 && name != "wte.weight" && name != "pos.weight" ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto* g : {&decay, &no_decay})
    if (!g->empty())
      groups.emplace_back(*g, std::make_unique<torch::optim::AdamWOptions>(
                                  torch::optim::AdamWOptions(c.lr).weight_decay(g == &decay ? 0.01 : 0.0)));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(c.lr).weight_decay(0.01));
}

// Linear warm-up over the first tenth of the run (at most 100 steps), then cosine decay to a
// tenth: without warm-up, Adam's first steps on a fresh transformer are large enough to make the
// loss jump.
double learning_rate(const TrainConfig& c, int step) {
  const int warmup = std::max(1, std::min(100, c.steps / 10));
  if (step <= warmup) return c.lr * step / warmup;
  const double progress = static_cast<double>(step - warmup) / std::max(1, c.steps - warmup);
  return c.lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * progress)));
}

void set_learning_rate(torch::optim::Optimizer* opt, double lr) {
  if (!opt) return;
  for (auto& group : opt->param_groups()) group.options().set_lr(lr);
}

// Each new character needs one forward through the pipeline; replica 0's last stage samples it
// and every rank receives it, so all ranks stay in step.
std::string generate(PipelineEngine& engine, Communicator& comm, const CharCorpus& corpus, const TrainConfig& c) {
  const std::string prompt = "And God said";
  at::Tensor context = corpus.encode(prompt);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(c.seed + 7);
  const int rows = c.microbatches * c.dp;
  const int sampler = engine.rank_of_stage(engine.num_stages() - 1, 0);
  for (int i = 0; i < c.sample_chars; ++i) {
    const auto window = context.narrow(0, std::max<std::int64_t>(0, context.numel() - c.seq_len),
                                       std::min<std::int64_t>(context.numel(), c.seq_len));
    const auto r = engine.eval_batch({window.unsqueeze(0).repeat({rows, 1})});
    at::Tensor next = at::zeros({1}, at::kLong);
    if (comm.rank() == sampler) {
      const at::Tensor logits = r.outputs.at(0)[0][-1].to(at::kDouble) / 0.8;  // temperature 0.8
      // A model whose outputs are not finite (trained on with --on-nonfinite skip) has no
      // distribution to sample: -1 tells every rank to stop.
      next = at::isfinite(logits).all().item<bool>() ? at::multinomial(at::softmax(logits, 0), 1, false, gen)
                                                      : at::full({1}, -1, at::kLong);
    }
    std::vector<at::Tensor> t{next};
    comm.world().broadcast(t, sampler, "sharing the sampled character");
    if (t[0].item<std::int64_t>() < 0) return "(no sample: the model's outputs are not finite)";
    context = at::cat({context, t[0]});
  }
  return corpus.decode(context);
}

}  // namespace

double optimizer_seconds_per_weight_byte(const TrainConfig& c, int vocab) {
  std::vector<LayerPtr> layers;
  NamedParameters params;
  double bytes = 0;
  for (const auto& spec : gpt_layers(model_config(c, vocab))) {
    if (!spec.factory) continue;  // a tied position: its weight is counted where it is defined
    layers.push_back(spec.factory());
    for (auto [name, p] : layers.back()->named_parameters()) {
      p.mutable_grad() = at::full_like(p, 1e-3);
      bytes += static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
      params.emplace_back(spec.name + "." + name, p);
    }
  }
  const auto optimizer = make_optimizer(c, params);
  std::vector<double> seconds;
  for (int i = 0; i < 6; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    optimizer->step();
    if (i > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
  return bytes > 0 ? seconds[seconds.size() / 2] / bytes : 0;
}

TrainSummary train_gpt(const TrainConfig& c, const CharCorpus& corpus, Communicator& comm,
                       const std::function<void(const TrainProgress&)>& progress,
                       const std::function<void(const std::string&)>& note, const std::string& machine_json) {
  check_train_config(c);
  const std::optional<std::string> resume = checkpoint_to_resume(c);
  const std::string root = checkpoint_root(c);
  auto tell = [&](const std::string& line) {
    if (comm.rank() == 0 && note) note(line);
  };
  EngineOptions o;
  o.schedule = c.schedule;
  o.chunks_per_rank = c.virtual_stages;
  o.microbatches = c.microbatches;
  o.dp = c.dp;
  o.pp = c.stages;
  o.partition = c.partition;
  o.checkpoint = c.checkpoint;
  if (partition_profiles_layers(c.partition) && comm.rank() == 0)  // one micro-batch of training text
    o.profile_sample = {std::get<0>(corpus.batch(false, 0, c.microbatch_size, c.seq_len, c.seed))};
  if (c.clip > 0) o.clip_grad_norm = c.clip;
  o.skip_nonfinite = c.on_nonfinite == "skip";
  ReportOptions ro{output_path(c, c.trace, "trace.json"), output_path(c, c.timeline, "timeline.svg"),
                   output_path(c, c.metrics, "metrics.jsonl"),
                   "GPT · " + c.schedule + " · " + std::to_string(c.stages) + " stages x " + std::to_string(c.dp) +
                       " replicas · " + std::to_string(c.microbatches) + " micro-batches",
                   10};
  ro.fresh_metrics = !resume;
  ro.report_dir = c.out;
  ro.config_json = to_json(c).dump();
  ro.machine_json = machine_json;
  Reporter report(ro);
  o.record = report.needs_recording();
  PipelineEngine engine(gpt_layers(model_config(c, corpus.vocab_size())), gpt_loss(),
                        [&](NamedParameters p) { return make_optimizer(c, p); }, comm, o);
  if (partition_weighs_layers(c.partition))
    tell("partition " + c.partition + ": layers per stage " + to_string(engine.partition()) + " (of embed, pos, " +
         std::to_string(c.layers) + " blocks, ln_f, lm_head)");

  TrainSummary s;
  if (!resume && !root.empty())
    if (const std::string line = earlier_run_note(root); !line.empty()) tell(line);
  if (resume) {
    std::vector<int> cut;
    const CheckpointInfo info = resume_engine(engine, *resume, cut);
    s.first_step = static_cast<int>(info.step) + 1;
    tell(describe_resume(c, info, cut));
  }
  // A resumed run continues the metrics of the steps it keeps; a fresh run replaces them with
  // its first line (so a run that fails before its first step leaves the earlier run's file).
  if (comm.rank() == 0 && !ro.metrics_path.empty() && resume) trim_metrics(ro.metrics_path, s.first_step - 1);
  s.last_step = c.stop_after > 0 ? c.stop_after : c.steps;
  auto save = [&](int step) {
    if (!root.empty()) tell(save_checkpoint(engine, root, trainer_state(c, step), c.keep, comm.rank(), s.checkpoint));
  };

  const int batch = c.microbatch_size * c.microbatches * c.dp;
  const std::int64_t tokens = static_cast<std::int64_t>(batch) * c.seq_len;
  s.unigram_entropy = corpus.unigram_entropy();
  double train_seconds = 0, bubble_sum = 0;
  int bubbles = 0;
  std::int64_t activation_peak = 0, memory_peak = 0;
  for (int step = s.first_step; step <= s.last_step; ++step) {
    const auto [x, y] = corpus.batch(false, step, batch, c.seq_len, c.seed);
    set_learning_rate(engine.optimizer(), learning_rate(c, step));
    StepResult r;
    try {
      r = engine.train_batch({x}, {y});
    } catch (const NonFiniteError& e) {
      throw NonFiniteError(std::string(e.what()) + "; the run stops here, the weights of step " +
                           std::to_string(step - 1) + " intact (--on-nonfinite skip skips such steps instead)");
    }
    s.skipped_steps += r.skipped;
    activation_peak = std::max(activation_peak, r.activation_peak_bytes);
    memory_peak = std::max(memory_peak, r.memory_peak_bytes);
    train_seconds += r.step_seconds;
    s.losses.push_back(r.loss);
    std::optional<double> val;
    if (step % c.eval_every == 0 || step == c.steps) {
      double sum = 0;
      for (int k = 0; k < c.eval_batches; ++k) {
        const auto [vx, vy] = corpus.batch(true, k, batch, c.seq_len, c.seed);
        sum += engine.eval_batch({vx}, {vy}).loss;
      }
      val = sum / c.eval_batches;
      s.val_losses.emplace_back(step, *val);
    }
    const double flops = gpt_flops_per_token(model_config(c, corpus.vocab_size()), c.seq_len) * tokens;
    const double bubble = report.on_step(engine, r, {batch, tokens, val, learning_rate(c, step), flops});
    if (bubble >= 0 && step > s.first_step) bubble_sum += bubble, ++bubbles;  // the first step warms up
    if (comm.rank() == 0 && progress)
      progress({step, c.steps, r.loss, val, static_cast<double>(tokens) / r.step_seconds, "tok", train_seconds});
    if (step == s.last_step || (c.save_every > 0 && step % c.save_every == 0)) save(step);
  }
  if (c.sample_chars > 0 && s.last_step == c.steps) s.sample = generate(engine, comm, corpus, c);
  report.finish(engine, s.sample);
  const int trained = s.last_step - s.first_step + 1;
  s.tokens_per_s = trained > 0 ? static_cast<double>(tokens) * trained / train_seconds : 0;
  s.flops_per_token = gpt_flops_per_token(model_config(c, corpus.vocab_size()), c.seq_len);
  s.bubble = bubbles > 0 ? bubble_sum / bubbles : -1;
  s.activation_peak_bytes = comm.world().all_gather(activation_peak, "activation peaks for the summary");
  s.memory_peak_bytes = comm.world().all_gather(memory_peak, "memory peaks for the summary");
  return s;
}

}  // namespace tpipe
