// What `tpipe train` keeps in a checkpoint beside the engine's state, and whether a run can
// continue from one. The learning-rate schedule is a function of (--lr, --steps, step) and the
// data of (--seed, step, global batch), so the step and the run's configuration are all the
// trainer's own state: a resumed run with the same global batch sees the same batches.
#include <nlohmann/json.hpp>

#include "gpt_checkpoints.h"
#include "tpipe/train/run_checkpoints.h"

namespace tpipe {
namespace {

const ResumeRules& rules() {
  static const ResumeRules r{
      "tpipe train",
      {{"layers", "--layers"},
       {"dim", "--dim"},
       {"heads", "--heads"},
       {"seq_len", "--seq-len"},
       {"seed", "--seed"},
       {"data", "--data"},
       {"optimizer", "--optimizer"}},
      "a resumed run needs the same model, --seed, --data and --optimizer",
      "its warm-up and cosine learning-rate schedule are functions of --steps",
      {{"lr", "--lr"}, {"clip", "--clip"}}};
  return r;
}

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
  return trainer_state(rules(), config, step,
                       {{"batches_seen", step}, {"global_batch", global_batch(config)}, {"seed", c.seed}});
}

std::optional<std::string> checkpoint_to_resume(const TrainConfig& c) {
  return checkpoint_to_resume(c.resume, checkpoint_root(c), rules(), to_json(c));
}

std::string describe_resume(const TrainConfig& c, const CheckpointInfo& info, const std::vector<int>& partition) {
  std::string s = describe_resume(rules(), to_json(c), info, partition);
  const int before = global_batch(nlohmann::json::parse(info.extra).at("config"));
  const int now = global_batch(to_json(c));
  if (before != now)
    s += "\nthe global batch changes from " + std::to_string(before) + " to " + std::to_string(now) +
         " sequences (micro-batch size x micro-batches x dp): from here the steps see other batches than the "
         "saved run would have; keep it equal to continue exactly";
  return s;
}

}  // namespace tpipe
