// The GPT training job (see gpt_trainer.h).
#include "tpipe/train/gpt_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "gpt_checkpoints.h"
#include "tpipe/checkpoint/directory.h"
#include "tpipe/engine.h"
#include "tpipe/models/gpt.h"
#include "tpipe/partition.h"
#include "tpipe/report.h"
#include "tpipe/schedule/generators.h"

namespace tpipe {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

std::string out_file(const TrainConfig& c, const std::string& chosen, const char* name) {
  if (chosen == "-") return "";
  return chosen.empty() ? c.out + "/" + name : chosen;
}

// AdamW decays the matrices of the blocks only: not biases, LayerNorms or the embeddings (wte,
// which the output projection shares, and pos), as GPT-2 and minGPT train.
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

GptConfig model_config(const TrainConfig& c, int vocab) {
  GptConfig g;
  g.vocab = vocab;
  g.dim = c.dim;
  g.heads = c.heads;
  g.layers = c.layers;
  g.seq_len = c.seq_len;
  g.seed = c.seed;
  return g;
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
      next = at::multinomial(at::softmax(logits, 0), 1, false, gen);
    }
    std::vector<at::Tensor> t{next};
    comm.world().broadcast(t, sampler, "sharing the sampled character");
    context = at::cat({context, t[0]});
  }
  return corpus.decode(context);
}

}  // namespace

void check_train_config(const TrainConfig& c) {
  auto one = [](int v, const char* flag) {
    if (v < 1) throw ConfigError(std::string(flag) + " must be at least 1, got " + std::to_string(v));
  };
  one(c.stages, "--stages");
  one(c.dp, "--dp");
  one(c.microbatches, "--microbatches");
  one(c.microbatch_size, "--microbatch-size");
  one(c.steps, "--steps");
  one(c.eval_every, "--eval-every");
  one(c.eval_batches, "--eval-batches");
  require(c.save_every >= 0, "--save-every must be >= 0 (0: only at the end)");
  require(c.keep >= 0, "--keep must be >= 0 (0: keep every checkpoint)");
  require(c.stop_after >= 0 && c.stop_after <= c.steps,
          "--stop-after must be between 0 (off) and --steps " + std::to_string(c.steps));
  require(c.stop_after == 0 || c.checkpoints != "-",
          "--stop-after ends the run with a checkpoint to resume from, but --checkpoints is '-'");
  require(c.virtual_stages >= 0, "--virtual-stages must be >= 0 (0: the schedule's own)");
  // An unknown name says which ones exist; the schedule gives the number of stages.
  const int num_stages = make_schedule(c.schedule, c.stages, c.microbatches, c.virtual_stages).num_stages();
  GptConfig g = model_config(c, 2);
  check_config(g);
  const int specs = c.layers + 4;  // embed, pos, blocks, ln_f, lm_head
  const std::string cut = num_stages == c.stages ? "--stages " + std::to_string(c.stages)
                                                 : std::to_string(num_stages) + " stages (--stages " +
                                                       std::to_string(c.stages) + " x " +
                                                       std::to_string(num_stages / c.stages) + " per rank)";
  require(num_stages <= specs, cut + " is more than the " + std::to_string(specs) + " layers to cut (embed, pos, " +
                                   std::to_string(c.layers) + " blocks, ln_f, lm_head); use fewer stages or more "
                                   "--layers");
  partition_from_string(c.partition, specs, num_stages);
  require(c.optimizer == "sgd" || c.optimizer == "adam" || c.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + c.optimizer + "'");
  require(c.lr > 0, "--lr must be positive");
  require(c.clip >= 0, "--clip must be >= 0 (0: no clipping)");
  require(c.sample_chars >= 0, "--sample-chars must be >= 0");
  if (!c.data.empty()) require(std::ifstream(c.data).good(), "cannot read --data " + c.data);
}

nlohmann::json to_json(const TrainConfig& c) {
  return {{"stages", c.stages}, {"dp", c.dp}, {"microbatches", c.microbatches},
          {"microbatch_size", c.microbatch_size}, {"schedule", c.schedule}, {"virtual_stages", c.virtual_stages},
          {"partition", c.partition}, {"layers", c.layers}, {"dim", c.dim}, {"heads", c.heads}, {"seq_len", c.seq_len}, {"steps", c.steps},
          {"lr", c.lr}, {"optimizer", c.optimizer}, {"clip", c.clip}, {"seed", c.seed}, {"data", c.data},
          {"out", c.out}, {"trace", c.trace}, {"timeline", c.timeline}, {"metrics", c.metrics},
          {"eval_every", c.eval_every}, {"eval_batches", c.eval_batches}, {"sample_chars", c.sample_chars},
          {"checkpoints", c.checkpoints}, {"save_every", c.save_every}, {"keep", c.keep}, {"resume", c.resume},
          {"stop_after", c.stop_after}};
}

void update_from_json(TrainConfig& c, const nlohmann::json& j) {
  const nlohmann::json known = to_json(c);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.contains(it.key())) throw ConfigError("unknown key '" + it.key() + "' in the config file");
  nlohmann::json merged = known;
  merged.update(j);
  try {
#define TPIPE_TAKE(key) merged.at(#key).get_to(c.key)
    TPIPE_TAKE(stages); TPIPE_TAKE(dp); TPIPE_TAKE(microbatches); TPIPE_TAKE(microbatch_size);
    TPIPE_TAKE(schedule); TPIPE_TAKE(virtual_stages); TPIPE_TAKE(partition); TPIPE_TAKE(layers); TPIPE_TAKE(dim); TPIPE_TAKE(heads);
    TPIPE_TAKE(seq_len); TPIPE_TAKE(steps); TPIPE_TAKE(lr); TPIPE_TAKE(optimizer); TPIPE_TAKE(clip);
    TPIPE_TAKE(seed); TPIPE_TAKE(data); TPIPE_TAKE(out); TPIPE_TAKE(trace); TPIPE_TAKE(timeline);
    TPIPE_TAKE(metrics); TPIPE_TAKE(eval_every); TPIPE_TAKE(eval_batches); TPIPE_TAKE(sample_chars);
    TPIPE_TAKE(checkpoints); TPIPE_TAKE(save_every); TPIPE_TAKE(keep); TPIPE_TAKE(resume); TPIPE_TAKE(stop_after);
#undef TPIPE_TAKE
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("bad value in the config file: ") + e.what());
  }
}

TrainSummary train_gpt(const TrainConfig& c, const CharCorpus& corpus, Communicator& comm,
                       const std::function<void(const TrainProgress&)>& progress,
                       const std::function<void(const std::string&)>& note) {
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
  if (c.clip > 0) o.clip_grad_norm = c.clip;
  ReportOptions ro{out_file(c, c.trace, "trace.json"), out_file(c, c.timeline, "timeline.svg"),
                   out_file(c, c.metrics, "metrics.jsonl"),
                   "GPT · " + c.schedule + " · " + std::to_string(c.stages) + " stages x " + std::to_string(c.dp) +
                       " replicas · " + std::to_string(c.microbatches) + " micro-batches",
                   10};
  Reporter report(ro);
  o.record = report.needs_recording();
  PipelineEngine engine(gpt_layers(model_config(c, corpus.vocab_size())), gpt_loss(),
                        [&](NamedParameters p) { return make_optimizer(c, p); }, comm, o);

  TrainSummary s;
  if (!resume && !root.empty())
    if (const auto earlier = checkpoint::find_checkpoint(root))
      tell("note: " + root + " holds checkpoints of an earlier run (the newest: " + *earlier +
           "); this run starts at step 1 and saves over them (--resume auto would continue it)");
  if (resume) {
    const CheckpointInfo info = engine.load(*resume);
    s.first_step = static_cast<int>(info.step) + 1;
    std::vector<int> cut;
    for (int st = 0; st < engine.num_stages(); ++st) cut.push_back(engine.partition().size(st));
    tell(describe_resume(c, info, cut));
  }
  // A resumed run continues the metrics of the steps it keeps; a fresh run starts them anew.
  if (comm.rank() == 0 && !ro.metrics_path.empty()) {
    if (resume)
      trim_metrics(ro.metrics_path, s.first_step - 1);
    else
      std::remove(ro.metrics_path.c_str());
  }
  s.last_step = c.stop_after > 0 ? c.stop_after : c.steps;
  auto save = [&](int step) {
    if (root.empty()) return;
    s.checkpoint = engine.save(root, trainer_state(c, step)).path;
    std::string line = "saved checkpoint " + s.checkpoint;
    // Pruning is rank 0's alone and must not stop the run: a failure is reported, not thrown.
    if (comm.rank() == 0 && c.keep > 0) try {
        for (const auto& gone : checkpoint::prune_checkpoints(root, c.keep)) line += "; removed " + gone + " (--keep)";
      } catch (const std::exception& e) {
        line += std::string("; --keep could not remove older ones: ") + e.what();
      }
    tell(line);
  };

  const int batch = c.microbatch_size * c.microbatches * c.dp;
  const std::int64_t tokens = static_cast<std::int64_t>(batch) * c.seq_len;
  s.unigram_entropy = corpus.unigram_entropy();
  double train_seconds = 0, bubble_sum = 0;
  int bubbles = 0;
  for (int step = s.first_step; step <= s.last_step; ++step) {
    const auto [x, y] = corpus.batch(false, step, batch, c.seq_len, c.seed);
    set_learning_rate(engine.optimizer(), learning_rate(c, step));
    const StepResult r = engine.train_batch({x}, {y});
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
    const double bubble = report.on_step(engine, r, batch, tokens, val);
    if (bubble >= 0 && step > s.first_step) bubble_sum += bubble, ++bubbles;  // the first step warms up
    if (comm.rank() == 0 && progress)
      progress({step, c.steps, r.loss, val, static_cast<double>(tokens) / r.step_seconds, train_seconds});
    if (step == s.last_step || (c.save_every > 0 && step % c.save_every == 0)) save(step);
  }
  report.finish();
  const int trained = s.last_step - s.first_step + 1;
  s.tokens_per_s = trained > 0 ? static_cast<double>(tokens) * trained / train_seconds : 0;
  s.flops_per_token = gpt_flops_per_token(model_config(c, corpus.vocab_size()), c.seq_len);
  s.bubble = bubbles > 0 ? bubble_sum / bubbles : -1;
  if (c.sample_chars > 0 && s.last_step == c.steps) s.sample = generate(engine, comm, corpus, c);
  return s;
}

}  // namespace tpipe
