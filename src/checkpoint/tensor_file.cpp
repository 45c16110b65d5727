// Named tensors to and from LibTorch's pickle format, verified against the manifest (see
// tensor_file.h).
#include "tpipe/checkpoint/tensor_file.h"

#include <torch/serialize.h>

#include <fstream>
#include <iterator>

#include "tpipe/error.h"
#include "tpipe/util/files.h"

namespace tpipe::checkpoint {

FileDigest write_tensors(const std::string& path, const NamedTensors& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach());
  const std::vector<char> bytes = torch::pickle_save(dict);
  const std::string content(bytes.begin(), bytes.end());
  write_file_atomic(path, content);
  return {static_cast<std::int64_t>(content.size()), sha256_hex(content)};
}

NamedTensors read_tensors(const std::string& dir, const std::string& file, const FileDigest& expected) {
  const std::string path = dir + "/" + file;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("checkpoint " + dir + " is missing " + file);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (static_cast<std::int64_t>(content.size()) != expected.bytes)
    throw ConfigError("checkpoint file " + path + " has " + std::to_string(content.size()) + " bytes, the manifest says " +
                      std::to_string(expected.bytes) + ": it is truncated or was replaced");
  if (sha256_hex(content) != expected.sha256)
    throw ConfigError("checkpoint file " + path + " is damaged: its SHA-256 differs from the manifest's");
  NamedTensors out;
  try {
    const c10::IValue v = torch::pickle_load(std::vector<char>(content.begin(), content.end()));
    for (const auto& item : v.toGenericDict()) out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  } catch (const c10::Error&) {
    throw ConfigError("checkpoint file " + path + " is not a dict of named tensors");
  }
  return out;
}

}  // namespace tpipe::checkpoint
