// The fidelity model and its single-process reference (see fidelity_model.h).
#include "fidelity_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <stdexcept>

namespace tpipe::testing {
namespace {

constexpr int kDim = 6;
constexpr int kVocab = 5;

struct FidelityBlockImpl : torch::nn::Module {
  explicit FidelityBlockImpl(int seed) {
    lin = register_module("lin", torch::nn::Linear(kDim, kDim));
    emb = register_module("emb", torch::nn::Embedding(kVocab, kDim));
    to(torch::kDouble);
    // Initialised from a generator of its own, so any thread or process builds the same weights.
    torch::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + seed);
    for (auto& p : parameters()) p.uniform_(-0.6, 0.6, gen);
  }
  Payload forward(const Payload& in) {
    return {torch::tanh(lin(in[0]) + emb(in[1])) * in[2], in[1], in[2]};
  }
  torch::nn::Linear lin{nullptr};
  torch::nn::Embedding emb{nullptr};
};

at::Generator gen_for(int step, int salt) { return at::make_generator<at::CPUGeneratorImpl>(7919 * step + salt); }

}  // namespace

std::vector<LayerSpec> fidelity_layers() {
  std::vector<LayerSpec> specs;
  for (int i = 0; i < kFidelityLayers; ++i)
    specs.push_back({"block" + std::to_string(i), [i] {
                       auto block = std::make_shared<FidelityBlockImpl>(i);
                       return module_layer(block, [block](const Payload& in) { return block->forward(in); });
                     }});
  return specs;
}

LossFn fidelity_loss() {
  return [](const Payload& out, const Payload& tgt) { return torch::mse_loss(out.at(0), tgt.at(0)); };
}

OptimizerFactory fidelity_optimizer() {
  return [](std::vector<at::Tensor> params) -> std::unique_ptr<torch::optim::Optimizer> {
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(0.05).momentum(0.9));
  };
}

std::vector<Chunking> fidelity_input_chunking() { return {Chunking::Batch, Chunking::Batch, Chunking::Replicate}; }

Payload fidelity_inputs(int step, int batch) {
  auto g = gen_for(step, 1);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  return {torch::randn({batch, kDim}, g, opts), torch::randint(0, kVocab, {batch}, g, torch::kLong),
          1.0 + 0.1 * torch::randn({kDim}, g, opts)};
}

Payload fidelity_targets(int step, int batch) {
  auto g = gen_for(step, 2);
  return {torch::randn({batch, kDim}, g, torch::TensorOptions().dtype(torch::kDouble))};
}

Trace reference_run(int batch, int steps) {
  std::vector<LayerPtr> layers;
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& spec : fidelity_layers()) {
    layers.push_back(spec.factory());
    for (auto& [n, t] : layers.back()->named_parameters()) named.emplace_back(spec.name + "." + n, t);
  }
  std::vector<at::Tensor> params;
  for (auto& [n, t] : named) params.push_back(t);
  auto opt = fidelity_optimizer()(params);
  Trace tr;
  for (int step = 0; step < steps; ++step) {
    opt->zero_grad();
    Payload x = fidelity_inputs(step, batch);
    for (auto& l : layers) x = l->forward(x);
    at::Tensor loss = fidelity_loss()(x, fidelity_targets(step, batch));
    loss.backward();
    tr.losses.push_back(loss.item<double>());
    std::map<std::string, at::Tensor> g;
    for (auto& [n, t] : named) g[n] = t.grad().clone();
    tr.grads.push_back(std::move(g));
    opt->step();
  }
  for (auto& [n, t] : named) tr.weights[n] = t.detach().clone();
  return tr;
}

Trace pipelined_run(PipelineEngine& engine, int batch, int steps) {
  Trace tr;
  for (int step = 0; step < steps; ++step) {
    const bool first = engine.is_first_stage(), last = engine.is_last_stage();
    const auto r = engine.train_batch(first ? fidelity_inputs(step, batch) : Payload{},
                                      last ? fidelity_targets(step, batch) : Payload{});
    tr.losses.push_back(r.loss);
    std::map<std::string, at::Tensor> g;
    for (auto& [n, t] : engine.named_parameters()) g[n] = t.grad().clone();
    tr.grads.push_back(std::move(g));
  }
  for (auto& [n, t] : engine.named_parameters()) tr.weights[n] = t.detach().clone();
  return tr;
}

double max_relative_error(const Trace& got, const Trace& want, std::string* worst) {
  double err = 0;
  auto note = [&](double e, const std::string& what) {
    if (e > err || std::isnan(e)) {
      err = std::isnan(e) ? INFINITY : e;
      if (worst) *worst = what;
    }
  };
  auto rel = [](const at::Tensor& a, const at::Tensor& b) {
    const double scale = std::max(b.abs().max().item<double>(), 1e-300);
    return (a - b).abs().max().item<double>() / scale;
  };
  if (got.losses.size() != want.losses.size()) throw std::runtime_error("different number of steps");
  for (std::size_t s = 0; s < want.losses.size(); ++s) {
    note(std::abs(got.losses[s] - want.losses[s]) / std::abs(want.losses[s]), "loss of step " + std::to_string(s));
    for (auto& [n, g] : got.grads[s]) {
      auto it = want.grads[s].find(n);
      if (it == want.grads[s].end()) throw std::runtime_error("unknown parameter " + n);
      note(rel(g, it->second), "gradient of " + n + " at step " + std::to_string(s));
    }
  }
  for (auto& [n, w] : got.weights) note(rel(w, want.weights.at(n)), "weight " + n);
  return err;
}

}  // namespace tpipe::testing
