// Private to the planner (plan.cpp): the time and memory model of one layout (see plan.h for the
// formulas), as pure functions of the layers' measurements scaled to one micro-batch.
#pragma once

#include <string>
#include <vector>

#include "tpipe/partition.h"
#include "tpipe/plan.h"
#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe::detail {

// One micro-batch's numbers per layer: measurements x rows / the sample's rows, except `state`
// (weights, gradients, optimizer state), which does not depend on the batch.
struct ScaledLayers {
  std::vector<double> forward, backward, input_grad, weight_grad, activation, output, state, weights;
};
ScaledLayers scale_layers(const PlanRequest& request, int rows);

// Whether micro-batch `mb` of `m` is checkpointed under `mode` (as the engine decides it).
bool checkpointed(const std::string& mode, int mb, int m);

// Whether the schedule runs W actions, i.e. splits the backward into B and W.
bool splits_backward(const Schedule& s);

// The simulator's costs for the layout: per-stage F, B (and W when split), and comm.
Costs pipeline_costs(const PlanRequest& request, const ScaledLayers& layers, const Partition& cut,
                     const Schedule& s, const std::string& checkpoint);

// The weight bytes of the rank (pipeline position) that holds the most.
double most_weight_bytes(const ScaledLayers& layers, const Partition& cut, const Schedule& s);

// Seconds of the data-parallel gradient all-reduce (0 for dp = 1), on the rank holding the most
// weight bytes.
double allreduce_seconds(const PlanRequest& request, const ScaledLayers& layers, const Partition& cut,
                         const Schedule& s, int dp);

// Seconds of the collectives at the step's end after the data-parallel one: tied weights, the
// gradient norm, the recorder's gather (see plan.h).
double step_end_seconds(const PlanRequest& request, const Schedule& s, int dp);

// Bytes each rank (pipeline position) holds at its peak.
std::vector<double> memory_per_rank(const ScaledLayers& layers, const Partition& cut, const Schedule& s,
                                    const std::string& checkpoint);

// An estimate of each layer's memory on its rank, and the cap per stage, for cutting under the
// memory limit with partition_balanced (which caps per stage a sum over layers, so the stage
// input the model charges is left out; the exact check of the cut is memory_per_rank's).
struct LayerMemoryCap {
  std::vector<double> memory;
  double cap = 0;
};
LayerMemoryCap layer_memory_cap(const PlanRequest& request, const ScaledLayers& layers, const Schedule& s,
                                const std::string& checkpoint);

}  // namespace tpipe::detail
