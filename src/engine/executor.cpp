// The executor: a thin loop over this rank's actions, one small function per kind of action.
#include <ATen/ATen.h>

#include <cmath>
#include <set>

#include "engine_impl.h"

namespace tpipe {

namespace {

std::int64_t payload_bytes(const Payload& p) {
  std::int64_t n = 0;
  for (const auto& t : p)
    if (t.defined()) n += static_cast<std::int64_t>(t.nbytes());
  return n;
}

// A tensor passed on unchanged, or sent while stashed, is counted once.
struct DistinctBytes {
  std::set<const void*> seen;
  std::int64_t bytes = 0;
  void add(const at::Tensor& t) {
    if (t.defined() && seen.insert(t.data_ptr()).second) bytes += static_cast<std::int64_t>(t.nbytes());
  }
};

}  // namespace

std::pair<std::int64_t, std::int64_t> PipelineEngine::Impl::measure_action(const Action& a) {
  const std::int64_t peak = memory.peak();
  memory_peak = std::max(memory_peak, peak);
  memory.reset_peak();
  if (a.op == Op::ReduceTied || a.op == Op::ReduceDp || a.op == Op::OptimizerStep) return {peak, -1};
  const std::int64_t activations = std::max<std::int64_t>(0, peak - memory_baseline - grads_before);
  activation_peak = std::max(activation_peak, activations);
  return {peak, activations};
}

std::int64_t PipelineEngine::Impl::gradient_bytes() const {
  std::int64_t bytes = 0;
  for (const auto& p : params)
    if (p.grad().defined()) bytes += static_cast<std::int64_t>(p.grad().nbytes());
  return bytes;
}

std::int64_t PipelineEngine::Impl::held_bytes() const {
  DistinctBytes d;
  for (const auto& [index, st] : stages)
    for (const auto& t : st->stashed_tensors()) d.add(t);
  for (const auto* m : {&outputs, &input_grads})
    for (const auto& [slot, p] : *m)
      for (const auto& t : p) d.add(t);
  for (const auto& t : comm.tensors_in_flight()) d.add(t);
  return d.bytes;
}

// Waits for a posted receive; the wait is what the trace shows as the RECV action.
Payload PipelineEngine::Impl::receive(const Action& consumer, Communicator::PendingRecv& r, const Action& recv,
                                      int peer) {
  const double since = recorder.on() ? recorder.now_us() : 0.0;
  Payload p = comm.wait_recv(r, where(consumer));
  recorder.waited(comm.rank(), recv, since, payload_bytes(p), peer);
  return p;
}

namespace {

// Takes what a map holds for a slot: a hand-off between two stages of this rank.
Payload take(std::map<std::pair<int, int>, Payload>& from, int stage, int mb) {
  auto it = from.find({stage, mb});
  Payload p = std::move(it->second);
  from.erase(it);
  return p;
}

// An activation or gradient handed from one stage to the next on the same rank: the same
// storage, cut from the giver's autograd graph as a message would be (the taker's backward
// returns the gradient instead of running into the giver's graph).
Payload detached(Payload p) {
  for (auto& t : p)
    if (t.defined()) t = t.detach();
  return p;
}

}  // namespace

void PipelineEngine::Impl::forward(const Action& a) {
  Stage& st = stage(a.stage);
  Payload in;
  if (st.is_first()) {
    in = inputs.at(a.mb);
  } else if (holds(a.stage - 1)) {
    in = detached(take(outputs, a.stage - 1, a.mb));
  } else {
    auto it = recv_act.find({a.stage, a.mb});
    in = receive(a, *it->second, {a.stage, Op::RecvAct, a.mb}, rank_of_stage(a.stage - 1));
    recv_act.erase(it);
  }
  const bool checkpoint = checkpointed(a.mb);
  Payload out = st.forward(a.mb, std::move(in), training, where(a), checkpoint);
  if (!st.is_last()) {
    outputs[{a.stage, a.mb}] = std::move(out);
    return;
  }
  if (!targets.empty()) {
    at::Tensor loss = loss_fn(out, targets.at(a.mb));
    StageLoss recompute;
    if (checkpoint)
      recompute = [this, mb = a.mb](const Payload& o) { return loss_fn(o, targets.at(mb)) * weights.at(mb); };
    if (training) st.set_loss(a.mb, loss * weights.at(a.mb), where(a), std::move(recompute));
    const double value = loss.item<double>();
    if (!std::isfinite(value) && nonfinite_mb < 0) nonfinite_mb = a.mb;
    loss_sum += value * weights.at(a.mb);
  }
  if (!training) outputs[{a.stage, a.mb}] = std::move(out);
}

void PipelineEngine::Impl::backward(const Action& a) {
  Stage& st = stage(a.stage);
  Payload grads;  // the last stage starts from its loss
  if (!st.is_last() && holds(a.stage + 1)) {
    grads = take(input_grads, a.stage + 1, a.mb);
  } else if (!st.is_last()) {
    auto it = recv_grad.find({a.stage, a.mb});
    grads = receive(a, *it->second, {a.stage, Op::RecvGrad, a.mb}, rank_of_stage(a.stage + 1));
    recv_grad.erase(it);
  }
  Payload g = st.backward(a.mb, grads, where(a), split_stages.count(a.stage) > 0);
  if (!st.is_first()) input_grads[{a.stage, a.mb}] = std::move(g);
}

void PipelineEngine::Impl::dispatch(const Action& a) {
  const Slot slot{a.stage, a.mb};
  switch (a.op) {
    case Op::Forward:
      forward(a);
      // After this rank's last forward, the loss is known.
      if (training && ++forwards_done == opts.microbatches * static_cast<int>(stages.size())) start_loss_share();
      return;
    case Op::Backward: return backward(a);
    case Op::Weight: return stage(a.stage).backward_weight(a.mb, where(a));
    case Op::RecvAct:
      recv_act[slot] = comm.post_recv(rank_of_stage(a.stage - 1), wire::Kind::Activation, a.mb, link_of(a.stage - 1));
      return;
    case Op::RecvGrad:
      recv_grad[slot] = comm.post_recv(rank_of_stage(a.stage + 1), wire::Kind::Gradient, a.mb, link_of(a.stage + 1));
      return;
    case Op::SendAct: {
      auto it = outputs.find(slot);
      sent_to = rank_of_stage(a.stage + 1);
      sent_bytes = payload_bytes(it->second);
      comm.send(it->second, sent_to, wire::Kind::Activation, a.mb, link_of(a.stage), a.stage, where(a));
      outputs.erase(it);  // the stash keeps what backward needs
      return;
    }
    case Op::SendGrad: {
      auto it = input_grads.find(slot);
      sent_to = rank_of_stage(a.stage - 1);
      sent_bytes = payload_bytes(it->second);
      comm.send(it->second, sent_to, wire::Kind::Gradient, a.mb, link_of(a.stage), a.stage, where(a));
      input_grads.erase(it);
      return;
    }
    case Op::ReduceTied: return timed_reduce([&] { reducer->start_tied(); });
    case Op::ReduceDp: return timed_reduce([&] { reducer->start_dp(); });
    case Op::OptimizerStep: return optimizer_step();
    default: throw Error(where(a).prefix() + "this engine does not run " + to_string(a.op) + " actions yet");
  }
}

// The recorder observes each action from here: posting a receive is not an event of its own
// (its wait inside the consumer is), everything else is timed from start to end.
void PipelineEngine::Impl::run(const Schedule& s) {
  for (const Action& a : s.ranks.at(position)) {
    try {
      sent_bytes = 0;
      sent_to = -1;
      recorder.begin();
      grads_before = gradient_bytes();
      dispatch(a);
      if (a.op == Op::RecvAct || a.op == Op::RecvGrad) continue;  // measured with their consumer
      const std::int64_t held = held_bytes();
      peak_held = std::max(peak_held, held);
      const auto [peak, activations] = measure_action(a);
      recorder.end(comm.rank(), a, sent_bytes, held, sent_to, activations, peak);
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

// Cuts this replica's share out of the batch, then the micro-batches out of that. Loss weights
// are shares of the global batch, so summing over micro-batches and replicas gives its mean.
void PipelineEngine::Impl::begin_step(const Payload& in, const Payload& tgt, bool train) {
  training = train;
  loss_sum = 0;
  nonfinite_mb = -1;
  skipped = false;
  forwards_done = 0;
  peak_held = held_bytes();
  memory_baseline = memory.current();
  memory.reset_peak();
  activation_peak = 0;
  memory_peak = memory_baseline;
  reduce_seconds = 0;
  recorder.clear();
  inputs.clear();
  targets.clear();
  weights.clear();
  const int m = opts.microbatches, dp = topo.dp();
  auto my_part = [&](const Payload& p, const std::vector<Chunking>& spec) {
    return opts.global_batch && dp > 1 ? split_microbatches(p, dp, spec)[replica] : p;
  };
  try {
    if (holds_first()) {
      if (in.empty()) throw ConfigError("stage 0 needs the input batch, got an empty payload");
      inputs = split_microbatches(my_part(in, opts.input_chunking), m, opts.input_chunking);
    }
    if (holds_last()) {
      if (train && tgt.empty()) throw ConfigError("the last stage needs the targets, got an empty payload");
      const Payload mine = tgt.empty() ? Payload{} : my_part(tgt, opts.target_chunking);
      const std::int64_t rows = mine.empty() ? 0 : batch_size(mine, opts.target_chunking);
      double global_rows = static_cast<double>(rows);
      if (opts.global_batch && !tgt.empty()) {
        global_rows = static_cast<double>(batch_size(tgt, opts.target_chunking));
      } else if (!opts.global_batch && dp > 1) {
        // Every replica's last stage takes part, with 0 rows when it has no targets, so the
        // collective never runs on some ranks only.
        std::vector<at::Tensor> n{at::full({1}, global_rows, at::kDouble)};
        dp_group->all_reduce_sum(n, "sum of the replicas' batch sizes");
        global_rows = n[0].item<double>();
      }
      if (!mine.empty()) {
        targets = split_microbatches(mine, m, opts.target_chunking);
        for (auto n : microbatch_sizes(rows, m)) weights.push_back(static_cast<double>(n) / global_rows);
      }
    }
  } catch (const ConfigError& e) {
    throw ConfigError(here().prefix() + e.what());
  }
}

// After a failure the ranks are out of step (messages of the failed step may still arrive, and
// peers may be gone): the engine refuses further steps. Receives still posted are dropped here;
// the Communicator keeps their buffers as long as Gloo may write into them.
void PipelineEngine::Impl::abandon_step(const std::string& why) {
  broken = why;
  for (auto& [index, st] : stages) st->clear_stash();
  loss_op = AsyncOp();  // its collective may never complete; nothing waits on it any more
  recv_act.clear();
  recv_grad.clear();
  outputs.clear();
  input_grads.clear();
}

void PipelineEngine::Impl::check_usable() const {
  if (!broken.empty())
    throw Error(here().prefix() + "this engine failed in an earlier step and cannot continue (the ranks are out of "
                "step); create a new Communicator and engine. The failure was: " + broken);
}

}  // namespace tpipe
