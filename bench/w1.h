// The reference workload W1 that `make bench` measures (bench/peers.py builds the same in PyTorch):
// an MLP of 8 x [Linear(1024,1024) + ReLU], batch 1024, m = 8 micro-batches, mse loss, SGD 1e-3,
// float32, p = 2 stages of 4 layers, one BLAS / intra-op thread per rank.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tpipe/layer.h"

namespace bench {

struct Workload {
  int layers = 8, width = 1024, batch = 1024, microbatches = 8, warmup = 2, steps = 5;
  int stages = 2;
  // Forward and backward of every Linear: 2 + 4 flops per multiply-add of the batch.
  double flops_per_step() const { return 6.0 * batch * static_cast<double>(width) * width * layers; }
};

inline std::vector<tpipe::LayerSpec> model(const Workload& w) {
  std::vector<tpipe::LayerSpec> specs;
  for (int i = 0; i < w.layers; ++i)
    specs.push_back(tpipe::layer("fc" + std::to_string(i), [=] {
      return torch::nn::Sequential(torch::nn::Linear(w.width, w.width), torch::nn::ReLU());
    }));
  return specs;
}

inline at::Tensor loss_fn(const at::Tensor& out, const at::Tensor& target) { return torch::mse_loss(out, target); }

inline std::unique_ptr<torch::optim::Optimizer> sgd(std::vector<at::Tensor> params) {
  return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(1e-3));
}

// Median of the timed steps (after the warm-up ones), in seconds.
template <class Step>
double time_steps(const Workload& w, Step step) {
  std::vector<double> t;
  for (int i = 0; i < w.warmup + w.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= w.warmup) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace bench
