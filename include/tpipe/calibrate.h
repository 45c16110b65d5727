// Calibrating a layer profile (profile.h) against the engine. Layers timed one at a time miss
// what running them as stages costs: the engine's bookkeeping, a stage's graph kept from B to W
// while other micro-batches run, gradients added into earlier ones, the loss. Here the engine's
// actions took 1.0-1.2x the profile of the same layers, its W up to 1.4x. So the engine runs the
// model for a few steps, each kind of action's measured time is compared with what the profile
// says for the same layers, and the profile is scaled by the ratios.
//
//   auto facts = tpipe::profile_layers(specs, {sample}, options);
//   const auto runs = tpipe::time_stages_alone(specs, loss, inputs, targets);
//   facts = tpipe::calibrated(facts, tpipe::calibration_of(runs, facts));
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "tpipe/engine.h"
#include "tpipe/partition.h"

namespace tpipe {

// One schedule's run: the cut, and per (stage, F/B/W) the median seconds of one micro-batch.
struct StageTimes {
  Partition cut;
  std::map<std::pair<int, Op>, double> seconds;
};

// Engine time over profiled time, per kind of action (1: they agree).
struct EngineCalibration {
  double forward = 1, backward = 1;        // F; a whole backward
  double input_grad = 1, weight_grad = 1;  // B and W of a split backward
};

// The medians of each (stage, compute op) over the recorded `steps`.
StageTimes stage_times(const Partition& cut, const std::vector<trace::StepTrace>& steps);

// The ratios, pooled over runs and stages: F over every stage; a whole backward over the runs
// without W; a split's B and W over the runs with W, on the stages after the first (whose B needs
// no input gradient, so its W is the whole backward). A ratio with nothing to compare is 1.
EngineCalibration calibration_of(const std::vector<StageTimes>& runs, const std::vector<LayerFacts>& facts);

// Runs the model on this process alone (one rank, two stages: interleaved-1f1b, then zb-v),
// `steps` recorded steps after one untimed, `microbatches` cut out of `inputs` and `targets`, no
// optimizer; the CPU generator is put back. Needs at least two layers.
std::vector<StageTimes> time_stages_alone(const std::vector<LayerSpec>& layers, const LossFn& loss,
                                          const Payload& inputs, const Payload& targets, int microbatches = 4,
                                          int steps = 2);

// `facts` with every time scaled by its factor (a split's B and W by theirs).
std::vector<LayerFacts> calibrated(std::vector<LayerFacts> facts, const EngineCalibration& f);

}  // namespace tpipe
