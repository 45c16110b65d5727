// One file of named tensors in LibTorch's pickle format, the one torch.save writes: Python's
// torch.load(path) returns a dict {name: tensor} in the saved order. Reading checks the file's
// size and SHA-256 against what the manifest recorded before anything is unpickled.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "tpipe/util/sha256.h"

namespace tpipe::checkpoint {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes (durably: flushed to disk) and returns the file's size and checksum. Throws ConfigError.
FileDigest write_tensors(const std::string& path, const NamedTensors& tensors);

// Reads <dir>/<file>, which the manifest says is `expected`. Throws ConfigError naming the file
// when it is missing, of another size (truncated), damaged (checksum) or not a dict of tensors.
NamedTensors read_tensors(const std::string& dir, const std::string& file, const FileDigest& expected);

// Every module's parameters and buffers in a checkpoint (or the latest in a directory of them),
// by the names PipelineEngine::named_parameters uses ("block0.attn.qkv.weight", a tie once by
// its key), each file verified first; what export_state_dict (inspect.h) writes.
NamedTensors checkpoint_weights(const std::string& path);

}  // namespace tpipe::checkpoint
