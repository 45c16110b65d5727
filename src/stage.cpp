// Forward and backward of one micro-batch on one stage (see stage.h).
#include "tpipe/stage.h"

#include <torch/torch.h>

#include <set>

#include "rng_state.h"
#include "direct_weights.h"
#include "split_backward.h"
#include "tpipe/comm/wire.h"

namespace tpipe {
namespace {

// Bytes held by the distinct tensors of some payloads (a tensor passed through counts once).
std::int64_t distinct_bytes(std::initializer_list<const Payload*> payloads) {
  std::set<const void*> seen;
  std::int64_t bytes = 0;
  for (const Payload* p : payloads)
    for (const auto& t : *p)
      if (t.defined() && seen.insert(t.data_ptr()).second) bytes += static_cast<std::int64_t>(t.nbytes());
  return bytes;
}

}  // namespace

Stage::Stage(int index, int num_stages, std::vector<LayerPtr> layers, std::vector<std::string> layer_names)
    : index_(index), num_stages_(num_stages), layers_(std::move(layers)), names_(std::move(layer_names)) {}

Payload Stage::run_layers(Payload x) {
  for (auto& layer : layers_) x = layer->forward(x);
  return x;
}

std::vector<at::Generator> Stage::generators() const {
  std::vector<at::Generator> out;
  std::set<const void*> seen;
  for (const auto& layer : layers_)
    for (auto& g : layer->generators())
      if (seen.insert(g.unsafeGetGeneratorImpl()).second) out.push_back(g);
  return out;
}

Payload Stage::forward(int mb, Payload input, bool training, const Where& where, bool checkpoint) {
  if (!training) {
    torch::NoGradGuard no_grad;
    return run_layers(std::move(input));
  }
  if (stash_.count(mb)) throw Error(where.prefix() + "micro-batch " + std::to_string(mb) + " is already in flight");
  if (!is_first())
    for (auto& t : input)
      if (t.defined() && t.is_floating_point()) t.requires_grad_(true);
  Stash s;
  s.input = input;
  Payload output;
  if (checkpoint) {
    s.rng = std::make_shared<RngStates>(capture_rng(generators()));
    torch::NoGradGuard no_grad;
    output = run_layers(std::move(input));
  } else {
    output = run_layers(std::move(input));
    s.output = output;
  }
  s.bytes = distinct_bytes({&s.input, &s.output});
  stashed_bytes_ += s.bytes;
  stash_.emplace(mb, std::move(s));
  return output;
}

void Stage::set_loss(int mb, const at::Tensor& loss, const Where& where, StageLoss recompute) {
  auto it = stash_.find(mb);
  if (it == stash_.end()) throw Error(where.prefix() + "loss for a micro-batch that is not in flight");
  if (!loss.defined() || loss.numel() != 1)
    throw ShapeError(where.prefix() + "the loss function must return one number, got " +
                     (loss.defined() ? wire::to_string(wire::TensorMeta{true, loss.scalar_type(), loss.sizes().vec()})
                                     : std::string("nothing")));
  if (it->second.rng && !recompute)
    throw Error(where.prefix() + "a checkpointed micro-batch needs its loss function to recompute the loss");
  it->second.loss = loss;
  it->second.recompute_loss = std::move(recompute);
}

void Stage::recompute(Stash& s, const Where& where) {
  RngReplay replay(*s.rng);
  s.output = run_layers(s.input);
  if (is_last()) {
    if (!s.loss.defined()) throw Error(where.prefix() + "backward on the last stage before the loss was computed");
    s.loss = s.recompute_loss(s.output);
  }
  s.rng.reset();
}

Payload Stage::backward(int mb, const Payload& output_grads, const Where& where, bool split) {
  auto it = stash_.find(mb);
  if (it == stash_.end()) throw Error(where.prefix() + "backward of a micro-batch that was never run forward");
  Stash s = std::move(it->second);
  stash_.erase(it);
  if (!split) stashed_bytes_ -= s.bytes;  // a split one holds its stash until its W
  if (s.rng) recompute(s, where);

  std::vector<at::Tensor> roots, seeds;
  if (is_last()) {
    if (!s.loss.defined()) throw Error(where.prefix() + "backward on the last stage before the loss was computed");
    if (s.loss.requires_grad()) roots.push_back(s.loss);
  } else {
    if (output_grads.size() != s.output.size())
      throw ShapeError(where.prefix() + "expected " + std::to_string(s.output.size()) + " output gradients, got " +
                       std::to_string(output_grads.size()));
    for (std::size_t i = 0; i < s.output.size(); ++i) {
      const at::Tensor& out = s.output[i];
      const at::Tensor& g = output_grads[i];
      if (!g.defined() || !out.defined() || !out.requires_grad()) continue;
      if (g.sizes() != out.sizes() || g.scalar_type() != out.scalar_type())
        throw ShapeError(where.prefix() + "expected gradient " +
                         wire::to_string(wire::TensorMeta{true, out.scalar_type(), out.sizes().vec()}) + " for output " +
                         std::to_string(i) + ", got " +
                         wire::to_string(wire::TensorMeta{true, g.scalar_type(), g.sizes().vec()}));
      roots.push_back(out);
      seeds.push_back(g);
    }
  }
  if (split) {
    std::vector<at::Tensor> inputs;
    for (const auto& t : s.input)
      if (t.defined() && t.requires_grad()) inputs.push_back(t);
    auto work = std::make_shared<SplitBackward>(roots, seeds, inputs, parameters());
    pending_w_[mb] = Pending{s, std::move(work)};
  } else if (!roots.empty()) {
    backward_direct(roots, seeds);
  }

  Payload input_grads;
  for (const auto& t : s.input)
    input_grads.push_back(t.defined() && t.requires_grad() ? t.grad() : at::Tensor());
  return input_grads;
}

void Stage::backward_weight(int mb, const Where& where) {
  auto it = pending_w_.find(mb);
  if (it == pending_w_.end()) throw Error(where.prefix() + "W of a micro-batch whose B has not run");
  Pending p = std::move(it->second);
  pending_w_.erase(it);
  p.work->weights();
  stashed_bytes_ -= p.stash.bytes;
}

std::vector<std::pair<std::string, at::Tensor>> Stage::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;  // two positions of one tied weight on this stage share it
  for (std::size_t i = 0; i < layers_.size(); ++i)
    for (auto& [name, t] : layers_[i]->named_parameters())
      if (seen.insert(t.unsafeGetTensorImpl()).second) out.emplace_back(names_[i] + "." + name, t);
  return out;
}

std::vector<std::pair<std::string, const Layer*>> Stage::named_modules() const {
  std::vector<std::pair<std::string, const Layer*>> out;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (seen.insert(names_[i]).second) out.emplace_back(names_[i], layers_[i].get());
  return out;
}

std::vector<at::Tensor> Stage::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

void Stage::train(bool on) {
  for (auto& layer : layers_) layer->train(on);
}

std::vector<at::Tensor> Stage::stashed_tensors() const {
  std::vector<at::Tensor> out;
  for (const auto& [mb, s] : stash_) {
    out.insert(out.end(), s.input.begin(), s.input.end());
    out.insert(out.end(), s.output.begin(), s.output.end());
  }
  for (const auto& [mb, p] : pending_w_) {
    out.insert(out.end(), p.stash.input.begin(), p.stash.input.end());
    out.insert(out.end(), p.stash.output.begin(), p.stash.output.end());
  }
  return out;
}

void Stage::clear_stash() {
  stash_.clear();
  pending_w_.clear();
  stashed_bytes_ = 0;
}

}  // namespace tpipe
