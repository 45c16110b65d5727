// Shared by the tests of the TorchScript front door's data and losses: writing fixtures the way
// torch.save does, catching a message, and whether Debian's python3-torch can serve as the oracle.
#pragma once

#include <torch/serialize.h>
#include <torch/torch.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../support/shell.h"
#include "../support/temp_dir.h"

namespace tpipe::script_testing {

using tpipe::testing::TempDir;

inline void save(const c10::IValue& v, const std::string& path) {
  const std::vector<char> bytes = torch::pickle_save(v);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class E>
std::string message(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("another exception: ") + e.what();
  }
  return "no error";
}

inline at::Tensor dbl(std::vector<double> v, std::vector<std::int64_t> shape) {
  return torch::tensor(v, torch::kDouble).reshape(shape);
}

inline bool python_has_torch() { return tpipe::testing::sh("/usr/bin/python3 -c 'import torch'").status == 0; }
inline const char* kNoPython =
    "Debian's python3-torch is not installed (/usr/bin/python3 cannot import torch): the check against "
    "PyTorch is skipped; `apt-get install python3-torch` runs it";

}  // namespace tpipe::script_testing
