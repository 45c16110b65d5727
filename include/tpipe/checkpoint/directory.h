// Checkpoint directories under a run's root: naming, finding the one to resume from, publishing
// a finished one atomically, and pruning old ones. Torch-free.
//
//   <root>/step-000590/      complete (has manifest.json)
//   <root>/step-000600/      complete; <root>/latest holds "step-000600"
//   <root>/.partial-step-000610/   a save in progress, or one that a crash interrupted: ignored
//   <root>/.removing-step-000500/  a checkpoint being pruned (--keep): ignored
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tpipe::checkpoint {

std::string step_dir_name(std::int64_t step);  // "step-000600"
std::string partial_dir_name(std::int64_t step);  // ".partial-step-000600"

// The complete checkpoints directly under `root` (directories step-N with a manifest.json),
// ordered by step. Empty when `root` does not exist.
std::vector<std::string> complete_checkpoints(const std::string& root);

// The checkpoint `path` names: `path` itself when it holds a manifest.json; otherwise, as a root,
// the one <root>/latest names if it is complete, else the complete one of the highest step.
// Throws ConfigError when there is none ("no checkpoint in DIR: ...").
std::string resolve_checkpoint(const std::string& path);
// The same, but std::nullopt instead of an error when `root` holds no complete checkpoint.
std::optional<std::string> find_checkpoint(const std::string& root);

// Moves the finished `partial` directory to <root>/<name> (an older one of that name is swapped
// out atomically and removed), then points <root>/latest at it. A crash at any moment leaves a
// complete checkpoint of that name, the old or the new.
void publish_checkpoint(const std::string& partial, const std::string& root, const std::string& name);

// Removes leftovers of interrupted saves and prunes (.partial-*, .removing-*) under `root`.
void remove_partials(const std::string& root);

// Keeps the `keep` newest complete checkpoints up to the one <root>/latest names (by step) and
// removes the older ones; those after `latest` (an earlier run that went further) are left
// alone. keep < 1 keeps everything. Returns the removed paths, oldest first.
std::vector<std::string> prune_checkpoints(const std::string& root, int keep);

}  // namespace tpipe::checkpoint
