// The model of the fidelity tests, and a single-process reference to compare pipelines against.
// Stages exchange three tensors: hidden states (float64, batch), token ids (int64, batch) and a
// scale vector without a batch dimension (replicated to every micro-batch):
//   layer i:  h <- tanh(W_i h + b_i + E_i[ids]) * scale
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tpipe/engine.h"

namespace tpipe::testing {

constexpr int kFidelityLayers = 8;

std::vector<LayerSpec> fidelity_layers();
LossFn fidelity_loss();
OptimizerFactory fidelity_optimizer();
std::vector<Chunking> fidelity_input_chunking();  // {Batch, Batch, Replicate}
Payload fidelity_inputs(int step, int batch);
Payload fidelity_targets(int step, int batch);

// What a run produced: per step the loss and every parameter's gradient, and the final weights.
struct Trace {
  std::vector<double> losses;
  std::vector<std::map<std::string, at::Tensor>> grads;
  std::map<std::string, at::Tensor> weights;
};

// The whole model in one process, whole batch, `steps` optimizer steps.
Trace reference_run(int batch, int steps);

// This rank's part, through the engine.
Trace pipelined_run(PipelineEngine& engine, int batch, int steps);

// Largest relative error of the pipelined values (only the parameters this rank holds) against
// the reference: max |a - b| / max |b| per tensor. Also checks that every name is known.
double max_relative_error(const Trace& pipelined, const Trace& reference, std::string* worst = nullptr);

}  // namespace tpipe::testing
