// Layers: the unit a model is cut into. A layer maps a Payload to a Payload, so stages can
// exchange several tensors. A LayerSpec is a name and a factory: only the rank that owns the
// layer calls the factory, so a stage never allocates the rest of the model.
#pragma once

#include <ATen/core/Generator.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tpipe/microbatch.h"

namespace torch::nn {
class Module;
}

namespace tpipe {

class Layer {
 public:
  virtual ~Layer() = default;
  virtual Payload forward(const Payload& input) = 0;
  // Parameters in a stable order with names local to the layer ("weight", "0.bias").
  virtual std::vector<std::pair<std::string, at::Tensor>> named_parameters() const = 0;
  // State that is not trained but belongs to the model (running statistics, ...): checkpoints
  // keep it beside the parameters.
  virtual std::vector<std::pair<std::string, at::Tensor>> named_buffers() const { return {}; }
  virtual void train(bool on) = 0;
  // The generators the forward draws random numbers from (dropout masks). Activation
  // checkpointing saves their states at the forward and replays them for the recomputation, so
  // it draws the same numbers. By default the process's CPU generator, which torch::dropout uses.
  virtual std::vector<at::Generator> generators() const;
};

using LayerPtr = std::shared_ptr<Layer>;

// How one position of the model uses a weight shared with other positions (tied weights, e.g. a
// GPT's token embedding on the first stage and its output projection on the last). Every stage
// that holds a position of `key` builds the module once with `factory`; `forward` says what this
// position computes with it. The engine keeps the copies identical: one broadcast at start-up,
// gradients summed over the stages of the tie (and the replicas) every step.
struct TiedLayerSpec {
  std::string key;
  std::function<std::shared_ptr<torch::nn::Module>()> factory;
  std::function<Payload(torch::nn::Module&, const Payload&)> forward;
};

struct LayerSpec {
  std::string name;
  std::function<LayerPtr()> factory;  // untied layers
  std::shared_ptr<const TiedLayerSpec> tied;  // tied layers (then `factory` is unused)
};

// A tied position:  tpipe::tied_layer("lm_head", {"embed", make_embedding, project_with_embedding})
LayerSpec tied_layer(std::string name, TiedLayerSpec spec);

// The layer of one tied position, computing with `module`: the one its stage built for the key.
LayerPtr tied_position(const TiedLayerSpec& spec, std::shared_ptr<torch::nn::Module> module);

// The generators a layer's forward draws from: unset means Layer's default (the process's CPU
// generator); a list, possibly empty, names exactly the layer's own.
using LayerGenerators = std::optional<std::vector<at::Generator>>;

// A layer around a torch::nn module and a Payload -> Payload function using it.
LayerPtr module_layer(std::shared_ptr<torch::nn::Module> module, std::function<Payload(const Payload&)> forward,
                      LayerGenerators generators = std::nullopt);

// A layer around a single-tensor function: it replaces tensor 0 of the payload and passes the
// others through unchanged (so an index or mask tensor can ride along).
LayerPtr tensor_layer(std::shared_ptr<torch::nn::Module> module, std::function<at::Tensor(const at::Tensor&)> forward,
                      LayerGenerators generators = std::nullopt);

// A parameter-free layer (activation, reshape, ...).
LayerPtr function_layer(std::function<Payload(const Payload&)> forward);

// Any single-tensor torch::nn module holder (torch::nn::Linear, Sequential, ...) as a LayerSpec:
//   tpipe::layer("fc1", [] { return torch::nn::Linear(1024, 1024); })
template <class MakeHolder>
LayerSpec layer(std::string name, MakeHolder make) {
  return {std::move(name), [make] {
            auto impl = make().ptr();
            return tensor_layer(impl, [impl](const at::Tensor& x) { return impl->forward(x); });
          }};
}

}  // namespace tpipe
