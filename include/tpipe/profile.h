// Profiling a model layer by layer on a sample micro-batch, for the "profile" partition (the cut
// that balances measured time, as torchgpipe's balance_by_time, under an optional memory cap as
// its balance_by_size), `tpipe partition` and `tpipe plan`.
//
//   auto facts = tpipe::profile_layers(tpipe::gpt_layers(cfg), {sample_ids});
//   auto cut = tpipe::partition_from_string("profile", 4, facts);
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tpipe/layer.h"
#include "tpipe/partition.h"

namespace tpipe {

struct ProfileOptions {
  // Micro-batches in flight in a timed round (after two untimed ones): their forwards, then their
  // backwards in the same order, as a pipeline runs a stage; the median counts.
  int repeats = 3;
  // As EngineOptions::layer_seed: layer i is built under torch::manual_seed(seed + i).
  std::optional<std::uint64_t> layer_seed;
  // Also time each backward split into B and W (LayerFacts::input_grad_s, weight_grad_s), as the
  // planner needs for zero-bubble schedules; two more rounds per layer (one untimed).
  bool split_backward = false;
};

// Builds every layer of the model in this process (the module of a tied key once, used at each of
// its positions) and passes `sample` (one micro-batch of the first layer's inputs) through them,
// one layer at a time, in training mode: each layer's forward and backward are timed (the
// backward seeded with ones for every floating output; a split's B for every micro-batch of the
// round before any W) and the bytes its forward keeps for the
// backward are counted by the counting allocator (memory.h). A layer's input is the previous
// layer's output. The process's CPU generator is put back afterwards, so the weights a pipeline
// then builds are the same as without profiling. Throws ShapeError naming the layer when a
// layer fails on the sample, ConfigError for an empty sample or model.
std::vector<LayerFacts> profile_layers(const std::vector<LayerSpec>& layers, const Payload& sample,
                                       const ProfileOptions& options = {});

}  // namespace tpipe
