// PipelineEngine: trains a model cut into stages, one stage per rank (or several: interleaved and
// V schedules), replicated dp times. Each rank builds only its own layers, runs its list of actions from the schedule (validated before the first step), and
// the step equals one step of single-process training on the whole batch:
//   loss = sum over micro-batches k of loss_k * (rows_k / rows),
// so gradients and updated weights match a single process to rounding.
//
//   tpipe::PipelineEngine engine(specs, loss_fn, make_optimizer, *comm, options);
//   auto r = engine.train_batch(inputs, targets);   // inputs used on stage 0, targets on the last
//   std::cout << r.loss;                            // the same mean loss on every rank
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tpipe/comm/communicator.h"
#include "tpipe/layer.h"
#include "tpipe/microbatch.h"
#include "tpipe/partition.h"
#include "tpipe/schedule/schedule.h"
#include "tpipe/topology.h"
#include "tpipe/trace/record.h"

namespace torch::optim {
class Optimizer;
}

namespace tpipe {

// The mean loss of one micro-batch (outputs of the last stage against its targets).
using LossFn = std::function<at::Tensor(const Payload& outputs, const Payload& targets)>;
// The parameters of this rank's stage by name ("block0.attn.qkv.weight", a tied weight under its
// key), so a factory can put them in groups (no weight decay on biases, say); a factory that needs
// no names takes them as std::vector<at::Tensor>.
struct NamedParameters : std::vector<std::pair<std::string, at::Tensor>> {
  using std::vector<std::pair<std::string, at::Tensor>>::vector;
  operator std::vector<at::Tensor>() const {
    std::vector<at::Tensor> out;
    for (const auto& item : *this) out.push_back(item.second);
    return out;
  }
};
// Any torch::optim optimizer over the parameters of this rank's stage.
using OptimizerFactory = std::function<std::unique_ptr<torch::optim::Optimizer>(NamedParameters params)>;

struct EngineOptions {
  // naive | gpipe | 1f1b | zb-h1 | interleaved-1f1b | zb-v, or a schedule file (schedule_file.h);
  // zb-h1 and zb-v split each backward into B and W.
  std::string schedule = "1f1b";
  // Stages per rank (virtual stages): the layers are cut into pp x chunks stages, placed by the
  // schedule (interleaved-1f1b: stage c*pp + r on rank r; zb-v: r and 2pp-1-r). 0: the
  // schedule's own (2 for interleaved-1f1b and zb-v, else 1).
  int chunks_per_rank = 0;
  int microbatches = 4;                // per replica
  int dp = 1;                          // data-parallel replicas; pp = world size / dp
  int pp = 0;                          // if set, checked against world size / dp
  bool global_batch = true;            // train_batch gets the global batch (each replica takes its
                                       // slice); false: each replica passes its own part
  // "uniform", layer counts per stage ("3,3,2"), "parameters" (balance parameter counts),
  // "type:REGEX" (balance the layers whose name matches, e.g. "type:block") or "profile" (balance
  // the time measured on `profile_sample`); see partition.h and profile.h.
  std::string partition = "uniform";
  // "profile": one micro-batch of the first stage's inputs, needed on rank 0, which profiles every
  // layer and gives all ranks the same cut.
  Payload profile_sample;
  // "profile": each stage's estimated memory at most this many bytes (0: no cap). The estimate is
  // its layers' weights x 4 (weights, gradients, two optimizer moments) plus their measured
  // activations x the schedule's most micro-batches in flight on a rank.
  double stage_memory_cap = 0;
  std::vector<Chunking> input_chunking;   // empty: default_chunking
  std::vector<Chunking> target_chunking;
  // Build layer i under torch::manual_seed(seed + i), so every cut of the model starts from the
  // same weights (DeepSpeed's seed_layers). This sets torch's process-wide generator: with ranks
  // as threads of one process, seed each factory's own generator instead (as gpt_layers does).
  std::optional<std::uint64_t> layer_seed;
  std::optional<double> clip_grad_norm;     // global-norm clipping over the whole model
  int tie_audit_every = 0;                  // compare tied copies' checksums every K steps (0: never)
  // A step whose loss or gradient norm is NaN or infinite changes no weight. By default every
  // rank then throws NonFiniteError naming the step and where it first appeared; with
  // skip_nonfinite the step is skipped (its gradients dropped, as mixed-precision trainers skip
  // an overflowing step) and StepResult::skipped says so.
  bool skip_nonfinite = false;
  // Activation checkpointing (torchgpipe's modes): "never"; "always": every micro-batch's forward
  // keeps only the stage's input (and random state) and is run again just before its backward;
  // "except_last": all but the last micro-batch, whose backward follows soonest. Same results,
  // less memory, about a third more compute.
  std::string checkpoint = "never";
  bool record = false;                      // record every action for traces and timelines
};

struct StepResult {
  double loss = 0;                         // mean loss of the global batch, on every rank
  std::int64_t held_peak_bytes = 0;        // the stages' boundary tensors this rank held at most:
                                           // stashed inputs and outputs, and what was waiting to be
                                           // sent or being sent (the engine's own accounting)
  // Measured by the counting allocator (memory.h): the most bytes of CPU tensor storage this rank
  // held during the step (weights, gradients, optimizer state, activations, message buffers) ...
  std::int64_t memory_peak_bytes = 0;
  // ... and the most of it that was activations: the peak during a forward, backward or message
  // less what the rank held at the start of the step (weights, optimizer state) and its gradients
  // as they stood when that action started. Everything autograd keeps, not only the stage
  // boundaries.
  std::int64_t activation_peak_bytes = 0;
  double grad_norm = 0;                    // global gradient norm before clipping, on every rank
  double reduce_seconds = 0;               // time this rank spent in gradient reductions that
                                           // compute did not hide (starting and waiting for them)
  double step_seconds = 0;                 // wall time of train_batch on this rank
  double gather_seconds = 0;               // recording: sending the step's events to rank 0
  bool skipped = false;                    // skip_nonfinite: the loss or gradient norm was not finite,
                                           // the optimizer did not step
};

// A checkpoint written by save or read by load.
struct CheckpointInfo {
  std::string path;           // the checkpoint directory, <root>/step-000600
  std::int64_t step = 0;      // training steps taken when it was saved
  int pp = 1, dp = 1;         // the layout at save time
  std::vector<int> partition;  // layers per stage at save time
  std::string schedule;
  int microbatches = 0;
  std::string extra = "{}";   // the JSON text given to save
  bool rng_restored = false;  // load: every rank's CPU generator state was restored (same pp and dp)
};

struct EvalResult {
  double loss = 0;   // on every rank (0 when no targets were given)
  Payload outputs;   // the last stage's outputs for the whole batch; empty on other ranks
};

class PipelineEngine {
 public:
  PipelineEngine(std::vector<LayerSpec> layers, LossFn loss, OptimizerFactory optimizer, Communicator& comm,
                 EngineOptions options = {});
  ~PipelineEngine();
  PipelineEngine(const PipelineEngine&) = delete;
  PipelineEngine& operator=(const PipelineEngine&) = delete;

  // One training step. `inputs` are read on the first stage, `targets` on the last; other ranks
  // may pass empty payloads. A step that throws leaves the engine unusable (later calls throw
  // and say so): the ranks are out of step, so recover by creating a new Communicator and engine.
  // Gradients start each step undefined (PyTorch's zero_grad(set_to_none=True)): a parameter that
  // gets no gradient keeps none, and optimizers skip it.
  StepResult train_batch(const Payload& inputs, const Payload& targets);

  // Forward only, no stash; loss when targets are given on the last stage.
  EvalResult eval_batch(const Payload& inputs, const Payload& targets = {});

  // With options.record: on rank 0, every rank's events of the last training step, on one clock
  // (empty on other ranks and when not recording).
  const trace::StepTrace& last_trace() const;

  // Switches recording on or off between steps (collective: every rank calls it together; the
  // first switch-on aligns the clocks).
  void set_recording(bool on);

  // Collective: every rank calls it between steps. Writes <root>/step-NNNNNN (NNNNNN = step()):
  // one file per layer (a tied weight once, by its key) with its parameters and buffers, the
  // optimizer state beside it (and the parameter groups' learning rates, restored when the
  // groups are alike), each rank's CPU generator state, and a manifest with checksums.
  // Replica 0 writes the layers; the directory appears complete or not at all, then
  // <root>/latest names it. `extra_json` (JSON text, rank 0's) is the program's own state: step,
  // data position, configuration. On failure every rank throws, the previous checkpoints are
  // intact, and the engine stays usable.
  CheckpointInfo save(const std::string& root, const std::string& extra_json = "{}");

  // Collective. Loads a checkpoint saved at any (pp, dp, partition) of the same model: `path` is
  // a checkpoint directory or a root (its `latest`, else its newest complete checkpoint). Every
  // rank reads only the layers it holds. Manifest, format version, layer names, shapes, dtypes
  // and checksums are all checked before anything changes; on a mismatch every rank throws one
  // ConfigError naming the file and what differs, and the model is untouched. Afterwards step()
  // is the checkpoint's step.
  CheckpointInfo load(const std::string& path);

  // Training steps taken (train_batch calls, counting those of a loaded checkpoint).
  std::int64_t step() const;

  // Throws Error naming the key and the copies if the copies of a tied weight differ bitwise.
  void audit_ties();

  int stage() const;                // the lowest of this rank's stages
  std::vector<int> stages() const;  // this rank's stages, ascending
  int replica() const;
  int num_stages() const;           // of the whole pipeline: pp x chunks per rank
  int rank_of_stage(int stage, int replica) const;
  const Topology& topology() const;
  bool is_first_stage() const;  // this rank holds the first stage (it reads the inputs)
  bool is_last_stage() const;   // this rank holds the last stage (it reads the targets)
  const Schedule& schedule() const;
  const Partition& partition() const;
  const EngineOptions& options() const;  // as given (a profiled partition's cut is partition())
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  torch::optim::Optimizer* optimizer();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpipe
