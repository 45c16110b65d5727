// The models of the fidelity tests (see fidelity_model.h).
#include "fidelity_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <stdexcept>

#include "tpipe/models/gpt.h"

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

ModelDef fidelity_model() {
  return {fidelity_layers, fidelity_loss(), fidelity_optimizer(), fidelity_inputs, fidelity_targets,
          fidelity_input_chunking(), std::nullopt};
}

namespace {

// A linear map on the hidden state whose weight is tied by `key`; built identically everywhere.
LayerSpec tied_linear(const std::string& name, const std::string& key) {
  return tied_layer(name, {key,
                           [key] {
                             auto lin = torch::nn::Linear(kDim, kDim);
                             lin->to(torch::kDouble);
                             torch::NoGradGuard no_grad;
                             auto gen = at::make_generator<at::CPUGeneratorImpl>(key == "a" ? 77 : 78);
                             for (auto& p : lin->parameters()) p.uniform_(-0.5, 0.5, gen);
                             return std::static_pointer_cast<torch::nn::Module>(lin.ptr());
                           },
                           [](torch::nn::Module& m, const Payload& in) -> Payload {
                             auto& lin = dynamic_cast<torch::nn::LinearImpl&>(m);
                             return {torch::tanh(lin.forward(in[0])), in[1], in[2]};
                           }});
}

}  // namespace

ModelDef tied_toy_model() {
  ModelDef m = fidelity_model();
  m.layers = [] {
    const auto blocks = fidelity_layers();
    return std::vector<LayerSpec>{tied_linear("b0", "b"), blocks[0], tied_linear("a0", "a"), blocks[1],
                                  tied_linear("b1", "b"), blocks[2], tied_linear("a1", "a"), blocks[3]};
  };
  return m;
}

ModelDef gpt_test_model(double dropout) {
  GptConfig c;
  c.vocab = 11;
  c.dim = 8;
  c.heads = 2;
  c.layers = 2;
  c.seq_len = 6;
  c.dtype = torch::kDouble;
  c.seed = 3;
  c.dropout = dropout;
  ModelDef m;
  m.layers = [c] { return gpt_layers(c); };
  m.loss = gpt_loss();
  m.optimizer = [](std::vector<at::Tensor> params) -> std::unique_ptr<torch::optim::Optimizer> {
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-2));
  };
  auto tokens = [c](int step, int batch, int salt) {
    auto g = gen_for(step, salt);
    return torch::randint(0, c.vocab, {batch, c.seq_len}, g, torch::kLong);
  };
  m.inputs = [tokens](int step, int batch) { return Payload{tokens(step, batch, 3)}; };
  m.targets = [tokens](int step, int batch) { return Payload{tokens(step, batch, 4)}; };
  return m;
}

}  // namespace tpipe::testing
