// Uniform and explicit partitions of layers into stages (see partition.h).
#include "tpipe/partition.h"

#include <sstream>

#include "tpipe/error.h"

namespace tpipe {

int Partition::stage_of(int layer) const {
  for (int s = 0; s < num_stages(); ++s)
    if (layer >= begin(s) && layer < end(s)) return s;
  throw ConfigError("layer " + std::to_string(layer) + " is outside the partition of " +
                    std::to_string(num_layers()) + " layers");
}

Partition partition_uniform(int layers, int stages) {
  if (stages < 1) throw ConfigError("need at least one stage, got " + std::to_string(stages));
  if (layers < stages)
    throw ConfigError("cannot cut " + std::to_string(layers) + " layers into " + std::to_string(stages) +
                      " stages: every stage needs at least one layer");
  std::vector<int> sizes(stages, layers / stages);
  for (int s = 0; s < layers % stages; ++s) ++sizes[s];
  return partition_explicit(sizes, layers);
}

Partition partition_explicit(const std::vector<int>& sizes, int layers) {
  if (sizes.empty()) throw ConfigError("an explicit partition needs at least one stage size");
  Partition p;
  p.bounds.push_back(0);
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    if (sizes[s] < 1)
      throw ConfigError("stage " + std::to_string(s) + " of the partition has " + std::to_string(sizes[s]) +
                        " layers; every stage needs at least one");
    p.bounds.push_back(p.bounds.back() + sizes[s]);
  }
  if (p.bounds.back() != layers)
    throw ConfigError("partition " + to_string(p) + " covers " + std::to_string(p.bounds.back()) +
                      " layers, but the model has " + std::to_string(layers));
  return p;
}

Partition partition_from_string(const std::string& method, int layers, int stages) {
  if (method == "uniform") return partition_uniform(layers, stages);
  std::vector<int> sizes;
  std::stringstream in(method);
  for (std::string tok; std::getline(in, tok, ',');) {
    std::size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size() || tok.empty())
      throw ConfigError("partition '" + method + "': expected 'uniform' or layer counts such as 3,3,2");
    sizes.push_back(v);
  }
  if (static_cast<int>(sizes.size()) != stages)
    throw ConfigError("partition '" + method + "' has " + std::to_string(sizes.size()) + " stages, but " +
                      std::to_string(stages) + " were asked for");
  return partition_explicit(sizes, layers);
}

std::string to_string(const Partition& p) {
  std::string s;
  for (int st = 0; st < p.num_stages(); ++st) s += (st ? "," : "") + std::to_string(p.size(st));
  return s;
}

}  // namespace tpipe
