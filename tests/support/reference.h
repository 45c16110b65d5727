// A model for fidelity tests, and the single-process reference every pipeline is compared with.
// The reference builds every layer in one process; positions of one tied key share ONE module,
// so it is the model with a single shared weight that the pipeline's copies must reproduce.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tpipe/engine.h"

namespace tpipe::testing {

struct ModelDef {
  std::function<std::vector<LayerSpec>()> layers;
  LossFn loss;
  OptimizerFactory optimizer;
  std::function<Payload(int step, int batch)> inputs;
  std::function<Payload(int step, int batch)> targets;
  std::vector<Chunking> input_chunking;  // empty: default
  std::optional<double> clip;            // global-norm clipping
};

// What a run produced: per step the loss, the gradient norm and every parameter's gradient (after
// clipping), and the final weights. Names: "<layer>.<param>", tied ones "<key>.<param>".
struct Trace {
  std::vector<double> losses;
  std::vector<double> grad_norms;
  std::vector<std::map<std::string, at::Tensor>> grads;
  std::map<std::string, at::Tensor> weights;
};

// The whole model in one process, whole (global) batch, `steps` optimizer steps.
Trace reference_run(const ModelDef& model, int batch, int steps);

// This rank's part, through an engine built with `options` (clipping and chunking from the model).
// `keep` receives the engine when the caller wants to use it afterwards.
Trace pipelined_run(const ModelDef& model, Communicator& comm, EngineOptions options, int batch, int steps,
                    std::unique_ptr<PipelineEngine>* keep = nullptr);

// Largest relative error of the pipelined values (the parameters this rank holds) against the
// reference: max |a - b| / max |b| per tensor; also checks that every name is known.
double max_relative_error(const Trace& pipelined, const Trace& reference, std::string* worst = nullptr);

}  // namespace tpipe::testing
