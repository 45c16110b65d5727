// The models of the fidelity tests.
// Stages exchange three tensors: hidden states (float64, batch), token ids (int64, batch) and a
// scale vector without a batch dimension (replicated to every micro-batch):
//   layer i:  h <- tanh(W_i h + b_i + E_i[ids]) * scale
#pragma once

#include <map>
#include <string>
#include <vector>

#include "reference.h"
#include "tpipe/engine.h"

namespace tpipe::testing {

constexpr int kFidelityLayers = 8;

std::vector<LayerSpec> fidelity_layers();
LossFn fidelity_loss();
OptimizerFactory fidelity_optimizer();
std::vector<Chunking> fidelity_input_chunking();  // {Batch, Batch, Replicate}
Payload fidelity_inputs(int step, int batch);
Payload fidelity_targets(int step, int batch);

// The fidelity model as a ModelDef (SGD with momentum).
ModelDef fidelity_model();

// Fidelity blocks interleaved with linear maps tied by key across stages:
//   [b] block0 [a] block1 [b] block2 [a] block3   (8 layers; keys used in different orders)
ModelDef tied_toy_model();

// The library's GPT (float64, tiny) with its output projection tied to the embedding; Adam.
ModelDef gpt_test_model(double dropout = 0);

}  // namespace tpipe::testing
