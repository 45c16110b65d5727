// Layer-by-layer profiling on a sample micro-batch (see profile.h).
#include "tpipe/profile.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "direct_weights.h"
#include "split_backward.h"
#include "tpipe/error.h"
#include "tpipe/memory.h"
#include "tpipe/util/stats.h"

namespace tpipe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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

// One forward of a layer, its graph kept for the backward.
struct Pass {
  Payload in, output;
  std::vector<at::Tensor> roots, seeds;
  double forward_s = 0, kept_bytes = 0;
};

Pass forward_pass(Layer& layer, const Payload& x, bool first, MemoryCounter& counter) {
  Pass p;
  p.in = as_input(x, first);
  const std::int64_t before = counter.current();
  const auto t0 = Clock::now();
  p.output = layer.forward(p.in);
  p.forward_s = seconds_since(t0);
  p.kept_bytes = static_cast<double>(counter.current() - before);
  for (const auto& t : p.output)
    if (t.defined() && t.requires_grad()) {
      p.roots.push_back(t);
      p.seeds.push_back(at::ones_like(t));
    }
  return p;
}

// Timings of one round: `n` forwards in flight, then their backwards in the same order, as a
// pipeline runs a stage's micro-batches (what a backward reads was written micro-batches ago, not
// just now). With `split`, every B first, then every W, as a zero-bubble schedule defers them.
struct Round {
  std::vector<double> forward, backward, input_grad, weight_grad;
  Pass last;  // the last forward, for the next layer's input and the memory it keeps
};

Round run_round(Layer& layer, const Payload& x, bool first, MemoryCounter& counter, int n, bool split) {
  Round r;
  std::vector<Pass> passes;
  for (int k = 0; k < n; ++k) {
    passes.push_back(forward_pass(layer, x, first, counter));
    r.forward.push_back(passes.back().forward_s);
  }
  if (split) {
    std::vector<at::Tensor> params;
    for (const auto& [name, p] : layer.named_parameters()) params.push_back(p);
    std::vector<std::unique_ptr<SplitBackward>> works;
    for (Pass& p : passes) {
      std::vector<at::Tensor> inputs;
      for (const auto& t : p.in)
        if (t.defined() && t.requires_grad()) inputs.push_back(t);
      const auto t0 = Clock::now();
      if (!p.roots.empty()) works.push_back(std::make_unique<SplitBackward>(p.roots, p.seeds, inputs, params));
      r.input_grad.push_back(seconds_since(t0));
    }
    for (std::size_t k = 0; k < works.size(); ++k) {  // W ends by freeing the graph, as in the engine
      const auto t0 = Clock::now();
      works[k]->weights();
      works[k].reset();
      passes[k].roots.clear();
      passes[k].seeds.clear();
      r.weight_grad.push_back(seconds_since(t0));
    }
    r.weight_grad.resize(passes.size(), 0.0);  // layers without a graph: nothing to time
  } else {
    for (Pass& p : passes) {
      const auto t0 = Clock::now();
      if (!p.roots.empty()) backward_direct(p.roots, p.seeds);  // as the engine's backward
      r.backward.push_back(seconds_since(t0));
    }
  }
  r.last = std::move(passes.back());
  for (auto& t : r.last.output) t = t.defined() ? t.detach() : t;
  for (const auto& [name, p] : layer.named_parameters()) p.mutable_grad().reset();
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
    Round whole, split;
    try {
      // Untimed rounds first, so that the timed ones find their memory in the allocator, not in
      // new pages: two of whole backwards (after one, the first block's B still took 2x the
      // others'), then one of the split.
      const int n = std::max(options.repeats, 1);
      run_round(*layer, x, i == 0, counter, n, false);
      run_round(*layer, x, i == 0, counter, n, false);
      whole = run_round(*layer, x, i == 0, counter, n, false);
      if (options.split_backward) {
        run_round(*layer, x, i == 0, counter, n, true);
        split = run_round(*layer, x, i == 0, counter, n, true);
      }
    } catch (const c10::Error& e) {
      throw ShapeError("profiling layer " + std::to_string(i) + " '" + spec.name + "' on the sample failed: " +
                       e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw ShapeError("profiling layer " + std::to_string(i) + " '" + spec.name + "' on the sample failed: " +
                       e.what());
    }
    f.forward_s = median(whole.forward);
    f.backward_s = median(whole.backward);
    f.input_grad_s = median(split.input_grad);
    f.weight_grad_s = median(split.weight_grad);
    f.activation_bytes = whole.last.kept_bytes;
    f.output_bytes = bytes_of(whole.last.output);
    facts.push_back(f);
    x = std::move(whole.last.output);
  }
  gen.set_state(rng_state);
  return facts;
}

}  // namespace tpipe
