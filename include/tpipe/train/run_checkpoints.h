// How a training run is saved and continued, for every trainer front door (tpipe train,
// tpipe train-script): the trainer's state saved beside the engine's (its name, its configuration
// as JSON with the flags' keys, its step), the checks that decide whether a run may continue a
// checkpoint, saving with --keep, the line a resume prints, and the metrics file of a resumed run.
// A configuration given here is a JSON object holding at least "steps", "stop_after", "stages",
// "dp", "schedule" and "microbatches".
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tpipe {

class PipelineEngine;
struct CheckpointInfo;

struct ResumeRules {
  std::string trainer;  // "tpipe train": a checkpoint another trainer saved is refused
  // Configuration keys (with their flags) that must equal the saved run's, and why.
  std::vector<std::pair<std::string, std::string>> same;
  std::string same_reason;   // "a resumed run needs the same model, --seed, --data and --optimizer"
  std::string steps_reason;  // why --steps must be the saved run's too
  // Keys (with their flags) that may change on resume; the resume line says when they do.
  std::vector<std::pair<std::string, std::string>> may_change;
};

// JSON text saved with the engine's checkpoint: trainer, step, configuration, and `data` (what the
// trainer needs to know about the batches seen).
std::string trainer_state(const ResumeRules& rules, const nlohmann::json& config, int step,
                          const nlohmann::json& data);

// The checkpoint a run continues: std::nullopt for a fresh run (no `resume`, or "auto" and none
// saved under `root` yet). Throws ConfigError when `resume` names no checkpoint or one this run
// cannot continue: another trainer's, another value of a `same` key or of "steps", one already at
// the last step, or "stop_after" not after it. Reads only the manifest.
std::optional<std::string> checkpoint_to_resume(const std::string& resume, const std::string& root,
                                                const ResumeRules& rules, const nlohmann::json& config);

// "resumed from DIR at step 10 of 600; saved at 2 stages x 1 replica (...), now ...", then a line
// for each `may_change` key whose value differs from the saved run's.
std::string describe_resume(const ResumeRules& rules, const nlohmann::json& config, const CheckpointInfo& info,
                            const std::vector<int>& partition);

// "note: ROOT holds checkpoints of an earlier run (...)" when a fresh run is about to save over
// them; "" when `root` holds none.
std::string earlier_run_note(const std::string& root);

// Collective: loads the checkpoint `dir` into `engine` (any layout); `partition` gets the layers
// per stage of the engine's own cut, for describe_resume.
CheckpointInfo resume_engine(PipelineEngine& engine, const std::string& dir, std::vector<int>& partition);

// Every rank: saves a checkpoint of step `step` under `root` with `state`; rank `rank` 0 then keeps
// the newest `keep` (0: all). Returns the line to tell the user; sets `path` to the saved one.
// A failure to prune is said in the line, not thrown: the run goes on.
std::string save_checkpoint(PipelineEngine& engine, const std::string& root, const std::string& state, int keep,
                            int rank, std::string& path);

// Keeps the metrics lines of steps up to `last_step`: those after it belong to the part of the
// run that the checkpoint does not hold, and will be trained again.
void trim_metrics(const std::string& path, int last_step);

}  // namespace tpipe
