// The manifest of a checkpoint: what a checkpoint directory holds, keyed by layer, not by rank,
// so that it loads onto any (pp, dp, partition) of the same model. Torch-free.
//
//   step-000600/
//     manifest.json          this, written last: format version, layout at save time, the layers,
//                            each module's tensors (shape, dtype) and every file's size and SHA-256
//     layers/<key>.pt        one module's parameters and buffers, {name: tensor} (torch.load reads it)
//     optimizer/<key>.pt     their optimizer state beside them, {"<param>.<field>": tensor}
//     rng/rank-00003.pt      each rank's CPU generator state (restored only on the same layout)
//
// A module is an untied layer (key = its name) or a tied weight (key = the tie's key), so a
// weight that two stages share is stored once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tpipe/util/sha256.h"

namespace tpipe::checkpoint {

constexpr const char* kFormat = "tpipe-checkpoint";
constexpr int kFormatVersion = 1;
// A layer file's entries named with this prefix ("~rng.0") are the states of the layer's own random
// generators (its dropout masks), not weights: a resumed run draws what an uninterrupted one would.
constexpr const char* kRngPrefix = "~rng.";

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string dtype;  // c10's name: "Float", "Double", "Long", ...
};

struct ModuleEntry {
  std::string file;            // relative to the checkpoint; empty when the module has no tensors
  std::string optimizer_file;  // empty when no parameter of it has optimizer state
  std::vector<TensorInfo> parameters;
  std::vector<TensorInfo> buffers;
};

struct LayerEntry {
  std::string name;
  std::string tie;  // key of the tied weight this position uses; empty for an untied layer
  const std::string& module() const { return tie.empty() ? name : tie; }
};

struct Layout {
  int pp = 1;
  int dp = 1;
  std::vector<int> partition;  // layers per stage
  std::string schedule;
  int microbatches = 1;
};

struct Manifest {
  int version = kFormatVersion;
  std::int64_t step = 0;
  Layout layout;
  std::string optimizer;  // "AdamW", "SGD", ...; empty: none
  std::vector<double> learning_rates;  // of rank 0's parameter groups (a scheduler's last setting)
  std::vector<LayerEntry> layers;
  std::map<std::string, ModuleEntry> modules;
  std::map<std::string, FileDigest> files;  // every file of the checkpoint except the manifest
  std::string extra = "{}";                 // JSON text of the program that saved (its own state)
};

nlohmann::json to_json(const Manifest& m);
// Throws ConfigError naming `path` and the field that is missing or of the wrong type, or the
// format version when it is newer than this tpipe reads.
Manifest manifest_from_json(const nlohmann::json& j, const std::string& path);
// Reads <dir>/manifest.json.
Manifest read_manifest(const std::string& dir);

// Throws ConfigError naming the first layer that differs: one the checkpoint lacks, one the model
// lacks, or a different tie.
void check_layers(const Manifest& m, const std::vector<LayerEntry>& model, const std::string& dir);

// A file name for a module key: letters, digits, '_', '-' and '.' kept, anything else as %XX.
std::string file_stem(const std::string& key);

// "Float [96,64]"
std::string describe(const TensorInfo& t);

}  // namespace tpipe::checkpoint
