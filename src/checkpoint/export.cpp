// `tpipe checkpoint export` as a library function (see inspect.h): needs LibTorch to unpickle.
#include <set>

#include "tpipe/checkpoint/directory.h"
#include "tpipe/checkpoint/inspect.h"
#include "tpipe/checkpoint/tensor_file.h"
#include "tpipe/error.h"

namespace tpipe::checkpoint {

NamedTensors checkpoint_weights(const std::string& path) {
  const std::string dir = resolve_checkpoint(path);
  const Manifest m = read_manifest(dir);
  NamedTensors all;
  std::set<std::string> done;  // a tied weight is taken at its first position only
  for (const auto& l : m.layers) {
    const ModuleEntry& e = m.modules.at(l.module());
    if (e.file.empty() || !done.insert(l.module()).second) continue;
    if (!m.files.count(e.file)) throw ConfigError(dir + "/manifest.json is damaged: it has no checksum of " + e.file);
    for (auto& [name, t] : read_tensors(dir, e.file, m.files.at(e.file)))
      if (name.rfind(kRngPrefix, 0) != 0) all.emplace_back(l.module() + "." + name, t);  // weights only
  }
  return all;
}

int export_state_dict(const std::string& path, const std::string& out) {
  const NamedTensors all = checkpoint_weights(path);
  write_tensors(out, all);
  return static_cast<int>(all.size());
}

}  // namespace tpipe::checkpoint
