// Cutting L layers into p consecutive stages. A Partition is the list of stage boundaries:
// stage s owns layers [bounds[s], bounds[s+1]). Pure functions; more methods (by parameters,
// by regex, by profiled cost) come later.
#pragma once

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

std::string to_string(const Partition& p);  // "3,3,2"

}  // namespace tpipe
