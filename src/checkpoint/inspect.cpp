// `tpipe checkpoint info` as a library function, torch-free (see inspect.h).
#include "tpipe/checkpoint/inspect.h"

#include <filesystem>

#include "tpipe/error.h"

#include "tpipe/checkpoint/directory.h"

namespace tpipe::checkpoint {

Inspection inspect_checkpoint(const std::string& path) {
  Inspection in;
  in.path = resolve_checkpoint(path);
  in.manifest = read_manifest(in.path);
  for (const auto& [key, m] : in.manifest.modules)
    for (const auto& t : m.parameters) {
      std::int64_t n = 1;
      for (auto d : t.shape) n *= d;
      in.parameters += n;
    }
  for (const auto& [file, want] : in.manifest.files) {
    in.bytes += want.bytes;
    const std::string p = in.path + "/" + file;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) {
      in.problems.push_back(file + ": missing");
      continue;
    }
    const FileDigest got = digest_file(p);
    if (got.bytes != want.bytes)
      in.problems.push_back(file + ": " + std::to_string(got.bytes) + " bytes, the manifest says " +
                            std::to_string(want.bytes) + " (truncated or replaced)");
    else if (got.sha256 != want.sha256)
      in.problems.push_back(file + ": damaged (SHA-256 differs from the manifest's)");
  }
  return in;
}

}  // namespace tpipe::checkpoint
