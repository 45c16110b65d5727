// Private to the GPT trainer: its state in a checkpoint, what a resume prints, and the metrics
// file of a resumed run (see gpt_checkpoints.cpp).
#pragma once

#include <string>
#include <vector>

#include "tpipe/engine.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe {

// JSON text saved with the engine's checkpoint: the run's configuration and its step.
std::string trainer_state(const TrainConfig& c, int step);

// "resumed from DIR at step 10 of 600; saved at 2 stages x 1 replica (...), now ...", and a
// second line when the global batch changes.
std::string describe_resume(const TrainConfig& c, const CheckpointInfo& info, const std::vector<int>& partition);

// Keeps the metrics lines of steps up to `last_step`: those after it belong to the part of the
// run that the checkpoint does not hold, and will be trained again.
void trim_metrics(const std::string& path, int last_step);

}  // namespace tpipe
