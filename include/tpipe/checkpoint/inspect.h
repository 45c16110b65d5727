// Looking at a checkpoint without a model: what it holds and whether every file is intact
// (`tpipe checkpoint info`), and one consolidated state dict for use outside tpipe
// (`tpipe checkpoint export`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpipe/checkpoint/manifest.h"

namespace tpipe::checkpoint {

struct Inspection {
  std::string path;               // the checkpoint directory
  Manifest manifest;
  std::int64_t parameters = 0;    // trained numbers, a tied weight once
  std::int64_t bytes = 0;         // of the files the manifest lists
  std::vector<std::string> problems;  // one line per missing, truncated or damaged file
};

// `path`: a checkpoint or a directory of them (its latest). Reads and checksums every file.
// Throws ConfigError when there is no readable manifest.
Inspection inspect_checkpoint(const std::string& path);

// Writes {"<layer or tie key>.<tensor>": tensor} of every module's parameters and buffers (the
// names PipelineEngine::named_parameters uses) to `out` in the format torch.load reads; returns
// how many tensors. Verifies each file first, as a load does.
int export_state_dict(const std::string& path, const std::string& out);

}  // namespace tpipe::checkpoint
