// Reading a checkpoint back in tests (see checkpoints.h).
#include "checkpoints.h"

#include "tpipe/checkpoint/manifest.h"
#include "tpipe/checkpoint/tensor_file.h"

namespace tpipe::testing {

std::map<std::string, at::Tensor> checkpoint_tensors(const std::string& dir) {
  const auto m = checkpoint::read_manifest(dir);
  std::map<std::string, at::Tensor> out;
  for (const auto& [file, digest] : m.files)
    if (file.rfind("rng/", 0) != 0)
      for (auto& [name, t] : checkpoint::read_tensors(dir, file, digest)) out[file + ":" + name] = t;
  return out;
}

}  // namespace tpipe::testing
