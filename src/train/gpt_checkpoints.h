// Private to the GPT trainer: its state in a checkpoint and what a resume prints (see
// gpt_checkpoints.cpp; the parts every trainer shares are in tpipe/train/run_checkpoints.h).
#pragma once

#include <string>
#include <vector>

#include "tpipe/engine.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe {

// JSON text saved with the engine's checkpoint: the run's configuration and its step.
std::string trainer_state(const TrainConfig& c, int step);

// "resumed from DIR at step 10 of 600; saved at 2 stages x 1 replica (...), now ...", and a
// line for each of --lr and --clip that changes, and one when the global batch changes.
std::string describe_resume(const TrainConfig& c, const CheckpointInfo& info, const std::vector<int>& partition);

}  // namespace tpipe
