// Private to the engine: the state of one rank's PipelineEngine, shared by the construction
// (engine.cpp), the executor loop (executor.cpp) and the end-of-step work (step.cpp).
#pragma once

#include <torch/optim/optimizer.h>

#include <chrono>
#include <map>
#include <memory>
#include <vector>

#include "recorder.h"
#include "reducer.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/engine.h"
#include "tpipe/stage.h"
#include "tpipe/topology.h"

namespace tpipe {

struct PipelineEngine::Impl {
  Communicator& comm;
  EngineOptions opts;
  LossFn loss_fn;
  Topology topo{1, 1};
  int replica = 0;
  Partition partition;
  std::vector<checkpoint::LayerEntry> model_layers;  // every layer of the model, for checkpoints
  std::map<std::string, std::vector<int>> ties;      // tie key -> the stages holding it
  Schedule train_schedule;
  bool split_backward = false;  // the schedule has W actions for this stage: B and W are separate
  Schedule eval_schedule;
  std::unique_ptr<Stage> stage;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<Group> dp_group;
  std::unique_ptr<Group> pipe_group;  // this replica's stages: the gradient norm
  std::vector<std::unique_ptr<Group>> tie_groups;
  std::unique_ptr<GradReducer> reducer;
  std::int64_t steps_done = 0;
  std::string broken;  // why an earlier step failed; the engine refuses further steps
  Recorder recorder;
  trace::StepTrace last_trace;  // rank 0, when recording

  // State of the step being run.
  bool training = false;
  std::vector<Payload> inputs, targets;
  std::vector<double> weights;  // share of the global batch per micro-batch (last stage)
  std::map<int, std::shared_ptr<Communicator::PendingRecv>> recv_act, recv_grad;
  std::map<int, Payload> outputs, input_grads;
  double loss_sum = 0;   // this replica's weighted loss (last stage)
  int forwards_done = 0;
  std::vector<at::Tensor> loss_share;  // the world all-reduce of the loss, started early
  AsyncOp loss_op;
  double step_loss = 0;  // the global batch's loss, on every rank
  std::int64_t peak_held = 0;  // activation bytes held (stash and sends) at most, this step
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

  int rank_of_stage(int s) const { return topo.rank(s, replica); }
  Where where(const Action& a) const { return Where{comm.rank(), a.stage, a.mb, to_string(a)}; }
  Where here() const { return Where{comm.rank(), stage->index()}; }

  // executor.cpp
  void run(const Schedule& s);
  Payload receive(const Action& consumer, Communicator::PendingRecv& r, const Action& recv, int peer);
  void dispatch(const Action& a);
  void forward(const Action& a);
  void backward(const Action& a);
  void begin_step(const Payload& in, const Payload& tgt, bool train);
  void abandon_step(const std::string& why);
  void check_usable() const;

  // Bytes held now by activations: the stash, outputs and gradients waiting to be sent, and what
  // is being sent; each tensor counted once.
  std::int64_t held_bytes() const;

  // step.cpp
  void start_loss_share();
  void finish_loss_share();
  void optimizer_step();
};

}  // namespace tpipe
