// Named tensors to and from LibTorch's pickle format, verified against the manifest (see
// tensor_file.h).
//
// torch::pickle_save builds the whole file in a growing std::vector (a 16 MB layer ran at ~150
// MB/s); here the same container (the pickled dict as data.pkl, each tensor's storage as a record
// data/<i>, which is what torch.load reads) streams straight into the file and the checksum.
#include "tpipe/checkpoint/tensor_file.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>

#include "tpipe/error.h"
#include "tpipe/util/files.h"

namespace tpipe::checkpoint {

FileDigest write_tensors(const std::string& path, const NamedTensors& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach());
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* b, size_t n) { pickled.insert(pickled.end(), b, b + n); }, nullptr,
                              nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(dict);
  pickler.stop();

  AtomicFile out(path);
  Sha256 hash;
  FileDigest d;
  // A failed write (a full disk) must not throw through the zip writer: its destructor would
  // write again and throw a second time. The first error is kept and thrown once it is done.
  std::exception_ptr failed;
  {
    caffe2::serialize::PyTorchStreamWriter zip([&](const void* data, size_t n) {
      if (failed) return n;
      try {
        out.write(data, n);
      } catch (...) {
        failed = std::current_exception();
        return n;
      }
      hash.add(data, n);
      d.bytes += static_cast<std::int64_t>(n);
      return n;
    });
    torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), zip);
    zip.writeEndOfFile();
  }
  if (failed) std::rethrow_exception(failed);
  out.commit();
  d.sha256 = hash.hex();
  return d;
}

NamedTensors read_tensors(const std::string& dir, const std::string& file, const FileDigest& expected) {
  const std::string path = dir + "/" + file;
  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw ConfigError("checkpoint " + dir + " is missing " + file);
  std::vector<char> content;
  char probe;
  if (expected.bytes >= 0) {
    content.resize(static_cast<std::size_t>(expected.bytes));
    const std::size_t got = std::fread(content.data(), 1, content.size(), f.get());
    if (got != content.size() || std::fread(&probe, 1, 1, f.get()) == 1) {
      std::fseek(f.get(), 0, SEEK_END);
      throw ConfigError("checkpoint file " + path + " has " + std::to_string(std::ftell(f.get())) +
                        " bytes, the manifest says " + std::to_string(expected.bytes) +
                        ": it is truncated or was replaced");
    }
  }
  if (sha256_hex(content.data(), content.size()) != expected.sha256)
    throw ConfigError("checkpoint file " + path + " is damaged: its SHA-256 differs from the manifest's");
  NamedTensors out;
  try {
    const c10::IValue v = torch::pickle_load(content);
    for (const auto& item : v.toGenericDict()) out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  } catch (const c10::Error&) {
    throw ConfigError("checkpoint file " + path + " is not a dict of named tensors");
  }
  return out;
}

}  // namespace tpipe::checkpoint
