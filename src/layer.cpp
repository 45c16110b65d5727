// Adapters from torch::nn modules and plain functions to Layers.
#include "tpipe/layer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include "tpipe/error.h"

namespace tpipe {
namespace {

class ModuleLayer : public Layer {
 public:
  ModuleLayer(std::shared_ptr<torch::nn::Module> m, std::function<Payload(const Payload&)> f, LayerGenerators g)
      : module_(std::move(m)), forward_(std::move(f)), generators_(std::move(g)) {}
  Payload forward(const Payload& in) override { return forward_(in); }
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    if (module_)
      for (const auto& item : module_->named_parameters()) out.emplace_back(item.key(), item.value());
    return out;
  }
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    if (module_)
      for (const auto& item : module_->named_buffers()) out.emplace_back(item.key(), item.value());
    return out;
  }
  void train(bool on) override {
    if (module_) module_->train(on);
  }
  std::vector<at::Generator> generators() const override {
    return generators_ ? *generators_ : Layer::generators();
  }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::function<Payload(const Payload&)> forward_;
  LayerGenerators generators_;
};

}  // namespace

std::vector<at::Generator> Layer::generators() const { return {at::detail::getDefaultCPUGenerator()}; }

LayerPtr module_layer(std::shared_ptr<torch::nn::Module> module, std::function<Payload(const Payload&)> forward,
                      LayerGenerators generators) {
  return std::make_shared<ModuleLayer>(std::move(module), std::move(forward), std::move(generators));
}

LayerPtr tensor_layer(std::shared_ptr<torch::nn::Module> module, std::function<at::Tensor(const at::Tensor&)> forward,
                      LayerGenerators generators) {
  return module_layer(std::move(module), [f = std::move(forward)](const Payload& in) {
    if (in.empty()) throw ShapeError("a single-tensor layer got an empty payload");
    Payload out = in;
    out[0] = f(in[0]);
    return out;
  }, std::move(generators));
}

LayerPtr function_layer(std::function<Payload(const Payload&)> forward) {
  return module_layer(nullptr, std::move(forward));
}

LayerPtr tied_position(const TiedLayerSpec& spec, std::shared_ptr<torch::nn::Module> module) {
  return module_layer(module, [module, forward = spec.forward](const Payload& in) { return forward(*module, in); });
}

LayerSpec tied_layer(std::string name, TiedLayerSpec spec) {
  if (spec.key.empty()) throw ConfigError("tied layer '" + name + "' needs a non-empty key");
  if (!spec.factory || !spec.forward) throw ConfigError("tied layer '" + name + "' needs a factory and a forward");
  return {std::move(name), nullptr, std::make_shared<const TiedLayerSpec>(std::move(spec))};
}

}  // namespace tpipe
