// Private to the engine: the state of one rank's PipelineEngine, shared by the construction
// (engine.cpp), the executor loop (executor.cpp) and the end-of-step work (step.cpp).
#pragma once

#include <torch/optim/optimizer.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "recorder.h"
#include "tpipe/memory.h"
#include "reducer.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/engine.h"
#include "tpipe/stage.h"
#include "tpipe/topology.h"

namespace tpipe {

// The cut of the model into the schedule's stages by options.partition (partition.h). Collective
// for "profile": rank 0 profiles every layer on options.profile_sample and all ranks get its
// numbers, so they cut alike; a failure there is a ConfigError on every rank.
Partition cut_model(const std::vector<LayerSpec>& layers, const Schedule& compute, const EngineOptions& options,
                    Communicator& comm);

struct PipelineEngine::Impl {
  Communicator& comm;
  EngineOptions opts;
  LossFn loss_fn;
  Topology topo{1, 1};
  int position = 0;  // this rank's place in the pipeline, 0..pp-1
  int replica = 0;
  Partition partition;  // one entry per stage: pp x chunks per rank
  std::vector<checkpoint::LayerEntry> model_layers;  // every layer of the model, for checkpoints
  std::map<std::string, std::vector<int>> ties;      // tie key -> the stages holding it
  Schedule train_schedule;  // also places the stages: train_schedule.rank_of(stage) is a position
  std::set<int> split_stages;  // stages whose backward is split into B and W (they have W actions)
  Schedule eval_schedule;
  std::map<int, std::unique_ptr<Stage>> stages;  // this rank's stages by index
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<Group> dp_group;
  std::unique_ptr<Group> pipe_group;  // this replica's ranks: the gradient norm
  std::vector<std::unique_ptr<Group>> tie_groups;
  std::unique_ptr<GradReducer> reducer;
  std::int64_t steps_done = 0;
  std::string broken;  // why an earlier step failed; the engine refuses further steps
  Recorder recorder;
  trace::StepTrace last_trace;  // rank 0, when recording

  // State of the step being run, per (stage, micro-batch).
  using Slot = std::pair<int, int>;
  bool training = false;
  std::vector<Payload> inputs, targets;
  std::vector<double> weights;  // share of the global batch per micro-batch (last stage)
  std::map<Slot, std::shared_ptr<Communicator::PendingRecv>> recv_act, recv_grad;
  // A stage's outputs until they are sent or handed to the next stage on this rank, and the
  // gradients of its inputs until they are sent or handed to the previous one.
  std::map<Slot, Payload> outputs, input_grads;
  double loss_sum = 0;   // this replica's weighted loss (last stage)
  int nonfinite_mb = -1;  // the first micro-batch whose loss was not finite (last stage)
  bool skipped = false;   // the step was not applied: its loss or gradient norm was not finite
  int forwards_done = 0;
  std::vector<at::Tensor> loss_share;  // the world all-reduce of the loss, started early
  AsyncOp loss_op;
  double step_loss = 0;  // the global batch's loss, on every rank
  std::int64_t peak_held = 0;  // activation bytes held (stash and sends) at most, this step
  MemoryCounter memory;        // this rank's tensor storage, counted while the engine works
  std::vector<at::Tensor> params;        // this rank's parameters, each once (gradient bytes)
  std::int64_t memory_baseline = 0;      // counted bytes at the start of the step
  std::int64_t grads_before = 0;         // gradient bytes at the start of the action being run
  std::int64_t gradient_bytes() const;
  std::int64_t activation_peak = 0, memory_peak = 0;  // measured, this step
  // After an action: the most bytes counted during it, and how much of that was activations (see
  // StepResult; -1 for the end-of-step actions); updates the step's peaks. The gradients are
  // taken as they were when the action started: a backward's memory peaks at its start, before
  // it adds to them.
  std::pair<std::int64_t, std::int64_t> measure_action(const Action& a);
  double grad_norm = 0;
  double reduce_seconds = 0;
  std::int64_t sent_bytes = 0;  // of the action being run, for its trace event
  int sent_to = -1;

  // Runs f and adds its wall time to reduce_seconds.
  template <class F>
  void timed_reduce(F f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    reduce_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  Impl(Communicator& c, EngineOptions o) : comm(c), opts(std::move(o)) {}

  int num_stages() const { return train_schedule.num_stages(); }
  int rank_of_stage(int s) const { return topo.rank(train_schedule.rank_of(s), replica); }
  bool holds(int s) const { return stages.count(s) > 0; }
  bool holds_first() const { return holds(0); }
  bool holds_last() const { return holds(num_stages() - 1); }
  Stage& stage(int s) const { return *stages.at(s); }
  int first_stage() const { return stages.begin()->first; }
  // The link of the messages a stage sends: its chunk on its rank (wire.h).
  int link_of(int s) const { return train_schedule.chunk_of(s); }
  Where where(const Action& a) const { return Where{comm.rank(), a.stage, a.mb, to_string(a)}; }
  Where here() const { return Where{comm.rank(), first_stage()}; }
  // Whether micro-batch `mb` of a training step runs checkpointed (EngineOptions::checkpoint).
  bool checkpointed(int mb) const {
    return training && (opts.checkpoint == "always" || (opts.checkpoint == "except_last" && mb < opts.microbatches - 1));
  }
  // "stage 1" or "stages 1,2" of the rank at `position` (the same in every replica).
  std::string stages_text(int position) const;
  // Compares every copy of every tied weight (collective over each tie group); throws naming them.
  void audit_ties() const;
  // Each module of this rank's stages once, in stage and layer order (stage.h).
  std::vector<std::pair<std::string, const Layer*>> named_modules() const;
  // Every parameter of this rank's stages by name, each tensor once.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  // executor.cpp
  void run(const Schedule& s);
  Payload receive(const Action& consumer, Communicator::PendingRecv& r, const Action& recv, int peer);
  void dispatch(const Action& a);
  void forward(const Action& a);
  void backward(const Action& a);
  void begin_step(const Payload& in, const Payload& tgt, bool train);
  void abandon_step(const std::string& why);
  void check_usable() const;

  // Bytes held now by activations: the stash, outputs and gradients waiting to be sent or handed
  // over, and what is being sent; each tensor counted once.
  std::int64_t held_bytes() const;

  // step.cpp
  void start_loss_share();
  void finish_loss_share();
  void optimizer_step();
  // Collective, called on every rank when the step's loss or norm is not finite: where it first
  // appeared (the micro-batch of the loss, or the stages with non-finite gradients).
  std::string locate_nonfinite();
};

}  // namespace tpipe
