// Single-process reference runs and pipelined runs of a ModelDef (see reference.h).
#include "reference.h"

#include <torch/torch.h>

#include <cmath>
#include <set>
#include <stdexcept>

namespace tpipe::testing {

Trace reference_run(const ModelDef& model, int batch, int steps) {
  std::vector<LayerPtr> layers;
  std::vector<std::pair<std::string, at::Tensor>> named;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> tied;
  std::set<const void*> seen;
  for (const auto& spec : model.layers()) {
    std::string prefix = spec.name;
    if (spec.tied) {
      auto& m = tied[spec.tied->key];
      if (!m) m = spec.tied->factory();
      layers.push_back(tied_position(*spec.tied, m));
      prefix = spec.tied->key;
    } else {
      layers.push_back(spec.factory());
    }
    for (auto& [n, t] : layers.back()->named_parameters())
      if (seen.insert(t.unsafeGetTensorImpl()).second) named.emplace_back(prefix + "." + n, t);
  }
  std::vector<at::Tensor> params;
  for (auto& [n, t] : named) params.push_back(t);
  auto opt = model.optimizer(NamedParameters(named.begin(), named.end()));
  Trace tr;
  for (int step = 0; step < steps; ++step) {
    opt->zero_grad();
    Payload x = model.inputs(step, batch);
    for (auto& l : layers) x = l->forward(x);
    at::Tensor loss = model.loss(x, model.targets(step, batch));
    loss.backward();
    tr.losses.push_back(loss.item<double>());
    double norm = 0;
    for (auto& p : params)
      if (p.grad().defined()) norm += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
    tr.grad_norms.push_back(std::sqrt(norm));
    if (model.clip) torch::nn::utils::clip_grad_norm_(params, *model.clip);
    std::map<std::string, at::Tensor> g;
    for (auto& [n, t] : named) g[n] = t.grad().defined() ? t.grad().clone() : torch::zeros_like(t);
    tr.grads.push_back(std::move(g));
    opt->step();
  }
  for (auto& [n, t] : named) tr.weights[n] = t.detach().clone();
  return tr;
}

Trace pipelined_run(const ModelDef& model, Communicator& comm, EngineOptions o, int batch, int steps,
                    std::unique_ptr<PipelineEngine>* keep) {
  if (!model.input_chunking.empty()) o.input_chunking = model.input_chunking;
  o.clip_grad_norm = model.clip;
  auto engine = std::make_unique<PipelineEngine>(model.layers(), model.loss, model.optimizer, comm, o);
  Trace tr;
  for (int step = 0; step < steps; ++step) {
    const auto r = engine->train_batch(engine->is_first_stage() ? model.inputs(step, batch) : Payload{},
                                       engine->is_last_stage() ? model.targets(step, batch) : Payload{});
    tr.losses.push_back(r.loss);
    tr.grad_norms.push_back(r.grad_norm);
    std::map<std::string, at::Tensor> g;
    for (auto& [n, t] : engine->named_parameters()) g[n] = t.grad().clone();
    tr.grads.push_back(std::move(g));
  }
  for (auto& [n, t] : engine->named_parameters()) tr.weights[n] = t.detach().clone();
  if (keep) *keep = std::move(engine);
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
    if (s < got.grad_norms.size() && s < want.grad_norms.size())
      note(std::abs(got.grad_norms[s] - want.grad_norms[s]) / want.grad_norms[s],
           "gradient norm of step " + std::to_string(s));
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
