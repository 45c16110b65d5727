// What `tpipe train` keeps in a checkpoint beside the engine's state, and whether a run can
// continue from one. The learning-rate schedule is a function of (--lr, --steps, step) and the
// data of (--seed, step, global batch), so the step and the run's configuration are all the
// trainer's own state: a resumed run with the same global batch sees the same batches.
#include <nlohmann/json.hpp>

#include <fstream>

#include "gpt_checkpoints.h"
#include "tpipe/checkpoint/directory.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/util/files.h"

namespace tpipe {
namespace {

constexpr const char* kTrainer = "tpipe train";

// What must match for a run to continue a checkpoint, with the flag that sets it.
const std::pair<const char*, const char*> kSame[] = {
    {"layers", "--layers"}, {"dim", "--dim"},   {"heads", "--heads"},         {"seq_len", "--seq-len"},
    {"seed", "--seed"},     {"data", "--data"}, {"optimizer", "--optimizer"},
};

int global_batch(const nlohmann::json& c) {
  return c.at("microbatch_size").get<int>() * c.at("microbatches").get<int>() * c.at("dp").get<int>();
}

}  // namespace

std::string checkpoint_root(const TrainConfig& c) {
  if (c.checkpoints == "-") return "";
  return c.checkpoints.empty() ? c.out : c.checkpoints;
}

std::string trainer_state(const TrainConfig& c, int step) {
  const nlohmann::json config = to_json(c);
  // Step k trained on batch k of the corpus (a function of --seed and the global batch).
  const nlohmann::json data{{"batches_seen", step}, {"global_batch", global_batch(config)}, {"seed", c.seed}};
  return nlohmann::json{{"trainer", kTrainer}, {"step", step}, {"data", data}, {"config", config}}.dump();
}

std::optional<std::string> checkpoint_to_resume(const TrainConfig& c) {
  if (c.resume.empty()) return std::nullopt;
  std::string dir;
  if (c.resume == "auto") {
    const std::string root = checkpoint_root(c);
    if (root.empty()) throw ConfigError("--resume auto looks in the checkpoint directory, but --checkpoints is '-'");
    auto found = checkpoint::find_checkpoint(root);
    if (!found) return std::nullopt;
    dir = *found;
  } else {
    dir = checkpoint::resolve_checkpoint(c.resume);
  }
  const checkpoint::Manifest m = checkpoint::read_manifest(dir);
  const auto extra = nlohmann::json::parse(m.extra);
  if (!extra.is_object() || !extra.contains("trainer") || extra["trainer"] != kTrainer || !extra.contains("config") ||
      !extra["config"].is_object())
    throw ConfigError("checkpoint " + dir + " was not saved by tpipe train, so it cannot be resumed by it (load it "
                      "with PipelineEngine::load)");
  const auto& saved = extra.at("config");
  const auto now = to_json(c);
  for (const auto& [key, flag] : kSame)
    if (!saved.contains(key) || saved.at(key) != now.at(key))
      throw ConfigError(std::string(flag) + " " + now.at(key).dump() + " differs from the run in " + dir + " (" +
                        saved.at(key).dump() + "): a resumed run needs the same model, --seed, --data and " +
                        "--optimizer");
  if (!saved.contains("steps") || saved.at("steps") != now.at("steps"))
    throw ConfigError("--steps " + now.at("steps").dump() + " differs from the run in " + dir + " (" +
                      saved.at("steps").dump() + " steps): its warm-up and cosine learning-rate schedule are " +
                      "functions of --steps; resume with --steps " + saved.at("steps").dump() + ", or start a new run");
  if (m.step >= c.steps)
    throw ConfigError("checkpoint " + dir + " is at step " + std::to_string(m.step) + " of " +
                      std::to_string(c.steps) + ": the run is complete, nothing to resume");
  if (c.stop_after > 0 && c.stop_after <= m.step)
    throw ConfigError("--stop-after " + std::to_string(c.stop_after) + " is not after the checkpoint's step " +
                      std::to_string(m.step));
  return dir;
}

std::string describe_resume(const TrainConfig& c, const CheckpointInfo& info, const std::vector<int>& partition) {
  auto join = [](const std::vector<int>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
  };
  auto layout = [&](int pp, int dp, const std::string& sched, int m, const std::string& part) {
    return std::to_string(pp) + " stages x " + std::to_string(dp) + (dp == 1 ? " replica" : " replicas") + " (" +
           sched + ", " + std::to_string(m) + " micro-batches, partition " + part + ")";
  };
  std::string s = "resumed from " + info.path + " at step " + std::to_string(info.step) + " of " +
                  std::to_string(c.steps) + "; saved at " +
                  layout(info.pp, info.dp, info.schedule, info.microbatches, join(info.partition)) + ", now " +
                  layout(c.stages, c.dp, c.schedule, c.microbatches, join(partition));
  const auto saved = nlohmann::json::parse(info.extra).at("config");
  const int before = global_batch(saved);
  const int now = global_batch(to_json(c));
  for (const auto& [key, flag] : {std::pair{"lr", "--lr"}, {"clip", "--clip"}})
    if (saved.at(key) != to_json(c).at(key))
      s += std::string("\n") + flag + " changes from " + saved.at(key).dump() + " to " + to_json(c).at(key).dump() +
           ": the rest of the run follows the new value";
  if (before != now)
    s += "\nthe global batch changes from " + std::to_string(before) + " to " + std::to_string(now) +
         " sequences (micro-batch size x micro-batches x dp): from here the steps see other batches than the "
         "saved run would have; keep it equal to continue exactly";
  return s;
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
