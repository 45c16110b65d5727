// Naming, finding, publishing and pruning checkpoint directories (see directory.h).
#include "tpipe/checkpoint/directory.h"

#include <fcntl.h>
#include <stdio.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tpipe/error.h"
#include "tpipe/util/files.h"

namespace fs = std::filesystem;

namespace tpipe::checkpoint {
namespace {

constexpr const char* kPrefix = "step-";

std::optional<std::int64_t> step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() == 5) return std::nullopt;
  std::int64_t v = 0;
  for (std::size_t i = 5; i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i])) || v > (INT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "manifest.json", ec);
}

std::string latest_name(const std::string& root) {
  std::ifstream in(root + "/latest");
  std::string name;
  std::getline(in, name);
  return name;
}

void remove_tree(const fs::path& p, const std::string& why) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) throw ConfigError("cannot remove " + p.string() + " (" + why + "): " + ec.message());
}

}  // namespace

std::string step_dir_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%06lld", kPrefix, static_cast<long long>(step));
  return buf;
}

std::string partial_dir_name(std::int64_t step) { return ".partial-" + step_dir_name(step); }

std::vector<std::string> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const auto step = step_of(it->path().filename().string());
    if (step && is_complete(it->path())) found.emplace_back(*step, it->path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(path);
  return out;
}

std::optional<std::string> find_checkpoint(const std::string& root) {
  if (is_complete(root)) return root;
  const std::string latest = latest_name(root);
  if (!latest.empty() && latest.find('/') == std::string::npos && is_complete(fs::path(root) / latest))
    return (fs::path(root) / latest).string();
  const auto all = complete_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) throw ConfigError("no checkpoint at " + path + ": no such directory");
  if (auto found = find_checkpoint(path)) return *found;
  throw ConfigError("no checkpoint in " + path + ": it has neither a manifest.json nor a complete step-NNNNNN " +
                    "checkpoint directory");
}

void publish_checkpoint(const std::string& partial, const std::string& root, const std::string& name) {
  const fs::path target = fs::path(root) / name;
  std::error_code ec;
  if (fs::exists(target, ec)) {
    // One atomic swap: at every moment a complete checkpoint of this name exists.
    if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0)
      throw ConfigError("cannot replace " + target.string() + ": " + std::strerror(errno));
  } else {
    fs::rename(partial, target, ec);
    if (ec) throw ConfigError("cannot move " + partial + " to " + target.string() + ": " + ec.message());
  }
  write_file_atomic((fs::path(root) / "latest").string(), name + "\n");
  remove_tree(partial, "the checkpoint it replaced");  // after a swap, the old one is there
}

void remove_partials(const std::string& root) {
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.rfind(".partial-", 0) == 0 || n.rfind(".removing-", 0) == 0) remove_tree(it->path(), "left by a crash");
  }
}

std::vector<std::string> prune_checkpoints(const std::string& root, int keep) {
  std::vector<std::string> removed;
  if (keep < 1) return removed;
  const auto all = complete_checkpoints(root);
  const std::string latest = latest_name(root);
  // Checkpoints after `latest` come from an earlier run that went further: not this run's to remove.
  auto end = all.end();
  if (auto at = std::find_if(all.begin(), all.end(), [&](const std::string& p) {
        return fs::path(p).filename().string() == latest;
      });
      at != all.end())
    end = at + 1;
  for (auto it = all.begin(); end - it > keep; ++it) {
    // Renamed first, so a crash mid-removal never leaves a manifest over missing files.
    const fs::path doomed = fs::path(root) / (".removing-" + fs::path(*it).filename().string());
    std::error_code ec;
    fs::rename(*it, doomed, ec);
    if (ec) throw ConfigError("cannot remove " + *it + " (--keep): " + ec.message());
    remove_tree(doomed, "--keep");
    removed.push_back(*it);
  }
  return removed;
}

}  // namespace tpipe::checkpoint
