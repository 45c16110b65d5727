// The pipeline engine: builds this rank's stage, validates the schedule, and runs it. The
// executor is the loop in run(): one small function per kind of action.
#include "tpipe/engine.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "tpipe/schedule/generators.h"
#include "tpipe/stage.h"

namespace tpipe {

struct PipelineEngine::Impl {
  Communicator& comm;
  EngineOptions opts;
  LossFn loss_fn;
  Partition partition;
  Schedule train_schedule;
  Schedule eval_schedule;
  std::unique_ptr<Stage> stage;
  std::unique_ptr<torch::optim::Optimizer> optimizer;

  // State of the step being run.
  bool training = false;
  std::vector<Payload> inputs, targets;
  std::vector<double> weights;  // share of the batch per micro-batch (last stage)
  std::map<int, std::shared_ptr<Communicator::PendingRecv>> recv_act, recv_grad;
  std::map<int, Payload> outputs, input_grads;
  double loss_sum = 0;

  Impl(Communicator& c, EngineOptions o) : comm(c), opts(std::move(o)) {}

  int me() const { return stage->index(); }
  int rank_of(int s) const { return train_schedule.rank_of(s); }
  Where where(const Action& a) const { return Where{comm.rank(), a.stage, a.mb, to_string(a)}; }

  void forward(const Action& a) {
    Payload in;
    if (stage->is_first()) {
      in = inputs.at(a.mb);
    } else {
      auto it = recv_act.find(a.mb);
      in = comm.wait_recv(*it->second, where(a));
      recv_act.erase(it);
    }
    Payload out = stage->forward(a.mb, std::move(in), training, where(a));
    if (stage->is_last()) {
      if (!targets.empty()) {
        at::Tensor loss = loss_fn(out, targets.at(a.mb));
        if (training) stage->set_loss(a.mb, loss * weights.at(a.mb), where(a));
        loss_sum += loss.item<double>() * weights.at(a.mb);
      }
      if (!training) outputs[a.mb] = out;
    } else {
      outputs[a.mb] = std::move(out);
    }
  }

  void backward(const Action& a) {
    Payload grads;
    if (!stage->is_last()) {
      auto it = recv_grad.find(a.mb);
      grads = comm.wait_recv(*it->second, where(a));
      recv_grad.erase(it);
    }
    Payload g = stage->backward(a.mb, grads, where(a));
    if (!stage->is_first()) input_grads[a.mb] = std::move(g);
  }

  void dispatch(const Action& a) {
    switch (a.op) {
      case Op::Forward: return forward(a);
      case Op::Backward: return backward(a);
      case Op::RecvAct: recv_act[a.mb] = comm.post_recv(rank_of(a.stage - 1), wire::Kind::Activation, a.mb); return;
      case Op::RecvGrad: recv_grad[a.mb] = comm.post_recv(rank_of(a.stage + 1), wire::Kind::Gradient, a.mb); return;
      case Op::SendAct: {
        auto it = outputs.find(a.mb);
        comm.send(it->second, rank_of(a.stage + 1), wire::Kind::Activation, a.mb, a.stage, where(a));
        outputs.erase(it);  // the stash keeps what backward needs
        return;
      }
      case Op::SendGrad: {
        auto it = input_grads.find(a.mb);
        comm.send(it->second, rank_of(a.stage - 1), wire::Kind::Gradient, a.mb, a.stage, where(a));
        input_grads.erase(it);
        return;
      }
      default: throw Error(where(a).prefix() + "this engine does not run " + to_string(a.op) + " actions yet");
    }
  }

  // Runs one rank's actions; errors from user code get the action's location.
  void run(const Schedule& s) {
    for (const Action& a : s.ranks.at(comm.rank())) {
      try {
        dispatch(a);
      } catch (const Error&) {
        throw;
      } catch (const c10::Error& e) {
        throw Error(where(a).prefix() + e.what_without_backtrace());
      } catch (const std::exception& e) {
        throw Error(where(a).prefix() + e.what());
      }
    }
    comm.wait_sends();
  }

  void begin_step(const Payload& in, const Payload& tgt, bool train) {
    training = train;
    loss_sum = 0;
    inputs.clear();
    targets.clear();
    weights.clear();
    const int m = opts.microbatches;
    const Where here{comm.rank(), me()};
    try {
      if (stage->is_first()) {
        if (in.empty()) throw ConfigError("stage 0 needs the input batch, got an empty payload");
        inputs = split_microbatches(in, m, opts.input_chunking);
      }
      if (stage->is_last() && (train || !tgt.empty())) {
        if (tgt.empty()) throw ConfigError("the last stage needs the targets, got an empty payload");
        targets = split_microbatches(tgt, m, opts.target_chunking);
        const auto rows = batch_size(tgt, opts.target_chunking);
        for (auto n : microbatch_sizes(rows, m)) weights.push_back(static_cast<double>(n) / static_cast<double>(rows));
      }
    } catch (const ConfigError& e) {
      throw ConfigError(here.prefix() + e.what());
    }
  }

  // The batch loss computed on the last stage, given to every rank.
  double share_loss() {
    if (comm.world_size() == 1) return loss_sum;
    at::Tensor t = at::full({1}, loss_sum, at::kDouble);
    comm.broadcast(t, rank_of(train_schedule.num_stages() - 1));
    return t.item<double>();
  }

  void abandon_step() {
    stage->clear_stash();
    recv_act.clear();
    recv_grad.clear();
    outputs.clear();
    input_grads.clear();
  }
};

PipelineEngine::PipelineEngine(std::vector<LayerSpec> layers, LossFn loss, OptimizerFactory optimizer,
                               Communicator& comm, EngineOptions options)
    : impl_(std::make_unique<Impl>(comm, std::move(options))) {
  auto& I = *impl_;
  const int p = comm.world_size();
  const int rank = comm.rank();
  const Where here{rank};
  std::set<std::string> names;
  for (const auto& l : layers)
    if (!names.insert(l.name).second) throw ConfigError(here.prefix() + "two layers are named '" + l.name + "'");
  I.partition = partition_from_string(I.opts.partition, static_cast<int>(layers.size()), p);
  I.train_schedule = make_schedule(I.opts.schedule, p, I.opts.microbatches);
  I.eval_schedule = forward_schedule(p, I.opts.microbatches);
  I.loss_fn = std::move(loss);

  const int s = rank;  // one stage per rank
  std::vector<LayerPtr> built;
  std::vector<std::string> built_names;
  for (int i = I.partition.begin(s); i < I.partition.end(s); ++i) {
    if (I.opts.layer_seed) torch::manual_seed(*I.opts.layer_seed + static_cast<std::uint64_t>(i));
    built.push_back(layers[i].factory());
    built_names.push_back(layers[i].name);
  }
  I.stage = std::make_unique<Stage>(s, p, std::move(built), std::move(built_names));
  auto params = I.stage->parameters();
  if (!params.empty() && optimizer) I.optimizer = optimizer(params);
}

PipelineEngine::~PipelineEngine() = default;

StepResult PipelineEngine::train_batch(const Payload& inputs, const Payload& targets) {
  auto& I = *impl_;
  I.stage->train(true);
  if (I.optimizer) I.optimizer->zero_grad();
  I.stage->reset_peak();
  try {
    I.begin_step(inputs, targets, true);
    I.run(I.train_schedule);
  } catch (...) {
    I.abandon_step();
    throw;
  }
  const double loss = I.share_loss();
  if (I.optimizer) I.optimizer->step();
  return {loss, I.stage->peak_stashed_bytes()};
}

EvalResult PipelineEngine::eval_batch(const Payload& inputs, const Payload& targets) {
  auto& I = *impl_;
  I.stage->train(false);
  EvalResult r;
  try {
    I.begin_step(inputs, targets, false);
    I.run(I.eval_schedule);
  } catch (...) {
    I.abandon_step();
    throw;
  }
  if (I.stage->is_last()) {
    std::vector<Payload> parts;
    for (auto& [mb, out] : I.outputs) parts.push_back(std::move(out));
    r.outputs = gather_microbatches(parts);
  }
  I.outputs.clear();
  r.loss = I.share_loss();
  return r;
}

int PipelineEngine::stage() const { return impl_->stage->index(); }
int PipelineEngine::num_stages() const { return impl_->train_schedule.num_stages(); }
bool PipelineEngine::is_first_stage() const { return impl_->stage->is_first(); }
bool PipelineEngine::is_last_stage() const { return impl_->stage->is_last(); }
const Schedule& PipelineEngine::schedule() const { return impl_->train_schedule; }
const Partition& PipelineEngine::partition() const { return impl_->partition; }
std::vector<std::pair<std::string, at::Tensor>> PipelineEngine::named_parameters() const {
  return impl_->stage->named_parameters();
}
torch::optim::Optimizer* PipelineEngine::optimizer() { return impl_->optimizer.get(); }

}  // namespace tpipe
