// Layer-by-layer profiling on a sample micro-batch (see profile.h).
#include "tpipe/profile.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "split_backward.h"
#include "tpipe/error.h"
#include "tpipe/memory.h"

namespace tpipe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double bytes_of(const Payload& p) {
  double n = 0;
  for (const auto& t : p)
    if (t.defined()) n += static_cast<double>(t.nbytes());
  return n;
}

// The layer's input as a stage would see it: floating tensors from an earlier layer are leaves
// that collect gradients (the first layer's inputs are data).
Payload as_input(const Payload& x, bool first) {
  Payload in;
  for (const auto& t : x) {
    at::Tensor leaf = t.defined() ? t.detach() : t;
    if (!first && leaf.defined() && leaf.is_floating_point()) leaf.requires_grad_(true);
    in.push_back(leaf);
  }
  return in;
}

struct Run {
  double forward_s = 0, backward_s = 0, kept_bytes = 0;
  double input_grad_s = 0, weight_grad_s = 0;  // split: B and W instead of backward_s
  Payload output;
};

// One forward and backward of `layer` on `x`, counted in `counter`; with `split`, the backward
// in B and W as a zero-bubble schedule runs it.
Run run_once(Layer& layer, const Payload& x, bool first, MemoryCounter& counter, bool split) {
  Run r;
  const Payload in = as_input(x, first);
  const std::int64_t before = counter.current();
  auto t0 = Clock::now();
  r.output = layer.forward(in);
  r.forward_s = seconds_since(t0);
  r.kept_bytes = static_cast<double>(counter.current() - before);
  std::vector<at::Tensor> roots, seeds;
  for (const auto& t : r.output)
    if (t.defined() && t.requires_grad()) {
      roots.push_back(t);
      seeds.push_back(at::ones_like(t));
    }
  if (split && !roots.empty()) {
    std::vector<at::Tensor> inputs, params;
    for (const auto& t : in)
      if (t.defined() && t.requires_grad()) inputs.push_back(t);
    for (const auto& [name, p] : layer.named_parameters()) params.push_back(p);
    t0 = Clock::now();
    SplitBackward work(roots, seeds, inputs, params);
    r.input_grad_s = seconds_since(t0);
    t0 = Clock::now();
    work.weights();
    r.weight_grad_s = seconds_since(t0);
  } else {
    t0 = Clock::now();
    if (!roots.empty()) torch::autograd::backward(roots, seeds);
    r.backward_s = seconds_since(t0);
  }
  for (auto& t : r.output) t = t.defined() ? t.detach() : t;
  return r;
}

}  // namespace

std::vector<LayerFacts> profile_layers(const std::vector<LayerSpec>& layers, const Payload& sample,
                                       const ProfileOptions& options) {
  if (layers.empty()) throw ConfigError("profiling needs at least one layer");
  if (sample.empty()) throw ConfigError("profiling needs a sample micro-batch of the first layer's inputs");
  const std::int64_t rows = sample[0].defined() && sample[0].dim() > 0 ? sample[0].size(0) : 1;
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor rng_state = gen.get_state();
  install_counting_allocator();
  MemoryCounter counter;
  CountingScope counting(counter);

  std::map<std::string, std::shared_ptr<torch::nn::Module>> tied;
  std::vector<LayerFacts> facts;
  Payload x = sample;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& spec = layers[i];
    if (options.layer_seed) torch::manual_seed(*options.layer_seed + i);
    LayerPtr layer;
    if (spec.tied) {
      auto& module = tied[spec.tied->key];
      if (!module) module = spec.tied->factory();
      layer = tied_position(*spec.tied, module);
    } else {
      layer = spec.factory();
    }
    layer->train(true);
    LayerFacts f;
    f.name = spec.name;
    f.rows = static_cast<int>(rows);
    for (const auto& [name, p] : layer->named_parameters()) {
      f.parameters += p.numel();
      f.parameter_bytes += static_cast<double>(p.nbytes());
    }
    std::vector<double> forward, backward, input_grad, weight_grad;
    Run r;
    try {
      for (int k = 0; k <= std::max(options.repeats, 1); ++k) {  // the first run warms up
        Run split;
        if (options.split_backward) {
          split = run_once(*layer, x, i == 0, counter, true);
          for (const auto& [name, p] : layer->named_parameters()) p.mutable_grad().reset();
        }
        r = run_once(*layer, x, i == 0, counter, false);
        for (const auto& [name, p] : layer->named_parameters()) p.mutable_grad().reset();
        if (k == 0) continue;
        forward.push_back(r.forward_s);
        backward.push_back(r.backward_s);
        input_grad.push_back(split.input_grad_s);
        weight_grad.push_back(split.weight_grad_s);
      }
    } catch (const c10::Error& e) {
      throw ShapeError("profiling layer " + std::to_string(i) + " '" + spec.name + "' on the sample failed: " +
                       e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw ShapeError("profiling layer " + std::to_string(i) + " '" + spec.name + "' on the sample failed: " +
                       e.what());
    }
    f.forward_s = median(forward);
    f.backward_s = median(backward);
    f.input_grad_s = median(input_grad);
    f.weight_grad_s = median(weight_grad);
    f.activation_bytes = r.kept_bytes;
    f.output_bytes = bytes_of(r.output);
    facts.push_back(f);
    x = std::move(r.output);
  }
  gen.set_state(rng_state);
  return facts;
}

}  // namespace tpipe
