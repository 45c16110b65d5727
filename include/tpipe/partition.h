// Cutting L layers into p consecutive stages. A Partition is the list of stage boundaries:
// stage s owns layers [bounds[s], bounds[s+1]). Pure functions: uniform, explicit sizes, and the
// optimal cut by per-layer cost (partition_balanced) behind the methods that weigh layers by
// parameters or by name.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace tpipe {

struct Partition {
  std::vector<int> bounds;  // size stages + 1, bounds[0] = 0, bounds.back() = layers

  int num_stages() const { return static_cast<int>(bounds.size()) - 1; }
  int num_layers() const { return bounds.empty() ? 0 : bounds.back(); }
  int begin(int stage) const { return bounds.at(stage); }
  int end(int stage) const { return bounds.at(stage + 1); }
  int size(int stage) const { return end(stage) - begin(stage); }
  int stage_of(int layer) const;  // throws ConfigError when out of range
};

// Sizes differing by at most one, larger stages first: 8 layers in 3 stages -> 3,3,2.
Partition partition_uniform(int layers, int stages);

// Explicit sizes per stage ("3,3,2"); each >= 1 and summing to `layers`.
Partition partition_explicit(const std::vector<int>& sizes, int layers);

// "uniform" or a comma-separated list of sizes such as "3,3,2".
Partition partition_from_string(const std::string& method, int layers, int stages);

// What the methods that weigh layers know of each one: its name and parameters, and what
// profiling measured on a sample micro-batch of `rows` rows (profile_layers in profile.h; rows = 0
// when the layer was not profiled).
struct LayerFacts {
  std::string name;
  std::int64_t parameters = 0;
  double parameter_bytes = 0;   // the weights (their gradients take as much again)
  int rows = 0;
  double forward_s = 0;         // one forward of the sample
  double backward_s = 0;        // its whole backward (input and weight gradients)
  // The backward split as the zero-bubble schedules run it (split_backward.h): B, the input's
  // gradient, and W, the weights'. Splitting costs more than the whole backward (B keeps the
  // graph, W walks it again). 0 and 0: not measured.
  double input_grad_s = 0, weight_grad_s = 0;
  double activation_bytes = 0;  // what the forward keeps for the backward, its output included
  double output_bytes = 0;      // its output (what a stage ending here sends)
};

// The methods above, and those that weigh layers (the optimal cut of partition_balanced):
//   "parameters"   balance the stages' parameter counts (DeepSpeed's partition_method);
//   "type:REGEX"   balance the number of layers whose name contains a match of REGEX
//                  (case-insensitive, ECMAScript), e.g. "type:block"; the others weigh nothing;
//   "profile"      balance the measured time (forward + backward), optionally with each stage's
//                  memory (the sum of `memory` over its layers) at most `memory_cap`.
// `facts` has one entry per layer. Throws ConfigError for a bad method or regex, a regex that
// matches no layer, "profile" without profiled facts, or a cap no cut fits.
Partition partition_from_string(const std::string& method, int stages, const std::vector<LayerFacts>& facts,
                                const std::vector<double>& memory = {},
                                double memory_cap = std::numeric_limits<double>::infinity());

// Whether a method needs LayerFacts ("parameters", "type:...", "profile").
bool partition_weighs_layers(const std::string& method);
// Whether it needs them profiled ("profile").
bool partition_profiles_layers(const std::string& method);

// The checks that need no layer facts: the form of the method (and of its regex), and that it
// can cut `layers` into `stages`. Throws ConfigError.
void check_partition_method(const std::string& method, int layers, int stages);

std::string to_string(const Partition& p);  // "3,3,2"

// The optimal contiguous cut of layers [0, cost.size()) into exactly `stages` non-empty stages.
// A stage's cost is the sum of its layers' costs, added from its first layer to its last
// (stage_costs below adds the same way, so the numbers compare exactly).
//
// Guarantee, in order of priority:
//  1. Every stage's memory (the sum of `memory` over its layers) is <= memory_cap. `memory` may
//     be empty (no constraint); otherwise it has one entry per layer.
//  2. The largest stage cost is as small as possible.
//  3. Among those cuts, the vector of stage costs sorted from largest to smallest is
//     lexicographically smallest: the second-largest stage is as small as possible, then the
//     third, and so on ("leximax").
//  4. Among cuts still tied (the same costs in another order), the one whose boundaries are
//     latest, comparing the last inner boundary first: earlier stages take the extra layers, as
//     partition_uniform does, so equal costs give exactly partition_uniform's cut.
//
// Throws ConfigError for stages < 1, stages > layers, a negative or non-finite cost or memory, a
// memory list of the wrong length, a negative or NaN cap, a layer whose memory alone exceeds the
// cap (the first such layer is named), or a cap no cut fits (the smallest cap that fits is named).
// Dynamic programming, O(stages * layers^2) time, O(stages * layers) memory.
Partition partition_balanced(const std::vector<double>& cost, int stages, const std::vector<double>& memory = {},
                             double memory_cap = std::numeric_limits<double>::infinity());

// The cost of each stage of `p`: the sum of its layers' costs, first layer to last. Throws
// ConfigError when `p` does not cover exactly cost.size() layers.
std::vector<double> stage_costs(const Partition& p, const std::vector<double>& cost);

}  // namespace tpipe
