// Saving and continuing a training run, for every trainer (see run_checkpoints.h).
#include "tpipe/train/run_checkpoints.h"

#include <fstream>

#include "tpipe/checkpoint/directory.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/engine.h"
#include "tpipe/error.h"
#include "tpipe/partition.h"
#include "tpipe/util/files.h"

namespace tpipe {

std::string trainer_state(const ResumeRules& rules, const nlohmann::json& config, int step,
                          const nlohmann::json& data) {
  return nlohmann::json{{"trainer", rules.trainer}, {"step", step}, {"data", data}, {"config", config}}.dump();
}

std::optional<std::string> checkpoint_to_resume(const std::string& resume, const std::string& root,
                                                const ResumeRules& rules, const nlohmann::json& now) {
  if (resume.empty()) return std::nullopt;
  std::string dir;
  if (resume == "auto") {
    if (root.empty()) throw ConfigError("--resume auto looks in the checkpoint directory, but --checkpoints is '-'");
    auto found = checkpoint::find_checkpoint(root);
    if (!found) return std::nullopt;
    dir = *found;
  } else {
    dir = checkpoint::resolve_checkpoint(resume);
  }
  const checkpoint::Manifest m = checkpoint::read_manifest(dir);
  const auto extra = nlohmann::json::parse(m.extra, nullptr, false);
  if (extra.is_discarded() || !extra.is_object() || !extra.contains("trainer") || extra["trainer"] != rules.trainer ||
      !extra.contains("config") || !extra["config"].is_object())
    throw ConfigError("checkpoint " + dir + " was not saved by " + rules.trainer + ", so it cannot be resumed by it" +
                      " (load it with PipelineEngine::load)");
  const auto& saved = extra.at("config");
  for (const auto& [key, flag] : rules.same)
    if (!saved.contains(key) || saved.at(key) != now.at(key))
      throw ConfigError(flag + " " + now.at(key).dump() + " differs from the run in " + dir + " (" +
                        (saved.contains(key) ? saved.at(key).dump() : "not set") + "): " + rules.same_reason);
  const int steps = now.at("steps").get<int>(), stop_after = now.at("stop_after").get<int>();
  if (!saved.contains("steps") || saved.at("steps") != now.at("steps"))
    throw ConfigError("--steps " + std::to_string(steps) + " differs from the run in " + dir + " (" +
                      saved.value("steps", nlohmann::json()).dump() + " steps): " + rules.steps_reason +
                      "; resume with --steps " + saved.value("steps", nlohmann::json()).dump() +
                      ", or start a new run");
  if (m.step >= steps)
    throw ConfigError("checkpoint " + dir + " is at step " + std::to_string(m.step) + " of " + std::to_string(steps) +
                      ": the run is complete, nothing to resume");
  if (stop_after > 0 && stop_after <= m.step)
    throw ConfigError("--stop-after " + std::to_string(stop_after) + " is not after the checkpoint's step " +
                      std::to_string(m.step));
  return dir;
}

std::string describe_resume(const ResumeRules& rules, const nlohmann::json& now, const CheckpointInfo& info,
                            const std::vector<int>& partition) {
  auto join = [](const std::vector<int>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
  };
  auto layout = [&](int pp, int dp, const std::string& sched, int m, const std::string& part) {
    return std::to_string(pp) + (pp == 1 ? " stage x " : " stages x ") + std::to_string(dp) + (dp == 1 ? " replica" : " replicas") + " (" +
           sched + ", " + std::to_string(m) + " micro-batches, partition " + part + ")";
  };
  std::string s = "resumed from " + info.path + " at step " + std::to_string(info.step) + " of " +
                  now.at("steps").dump() + "; saved at " +
                  layout(info.pp, info.dp, info.schedule, info.microbatches, join(info.partition)) + ", now " +
                  layout(now.at("stages"), now.at("dp"), now.at("schedule"), now.at("microbatches"), join(partition));
  const auto saved = nlohmann::json::parse(info.extra).at("config");
  for (const auto& [key, flag] : rules.may_change)
    if (saved.value(key, nlohmann::json()) != now.at(key))
      s += "\n" + flag + " changes from " + saved.value(key, nlohmann::json()).dump() + " to " + now.at(key).dump() +
           ": the rest of the run follows the new value";
  return s;
}

std::string earlier_run_note(const std::string& root) {
  const auto earlier = checkpoint::find_checkpoint(root);
  if (!earlier) return "";
  return "note: " + root + " holds checkpoints of an earlier run (the newest: " + *earlier +
         "); this run starts at step 1 and saves over them (--resume auto would continue it)";
}

CheckpointInfo resume_engine(PipelineEngine& engine, const std::string& dir, std::vector<int>& partition) {
  const CheckpointInfo info = engine.load(dir);
  partition.clear();
  for (int st = 0; st < engine.num_stages(); ++st) partition.push_back(engine.partition().size(st));
  return info;
}

std::string save_checkpoint(PipelineEngine& engine, const std::string& root, const std::string& state, int keep,
                            int rank, std::string& path) {
  path = engine.save(root, state).path;
  std::string line = "saved checkpoint " + path;
  if (rank == 0 && keep > 0) try {
      for (const auto& gone : checkpoint::prune_checkpoints(root, keep)) line += "; removed " + gone + " (--keep)";
    } catch (const std::exception& e) {
      line += std::string("; --keep could not remove older ones: ") + e.what();
    }
  return line;
}

void trim_metrics(const std::string& path, int last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("step", last_step + 1) <= last_step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace tpipe
