// Private to the TorchScript front door: the pieces its configuration and its trainer share.
#pragma once

#include <optional>

#include "tpipe/engine.h"
#include "tpipe/script/script_trainer.h"
#include "tpipe/train/run_checkpoints.h"

namespace tpipe {

// What must match for a run to continue a checkpoint of tpipe train-script, and what may change.
const ResumeRules& script_resume_rules();

// --dtype as a scalar type; std::nullopt: the model file's. Throws ConfigError for another name.
std::optional<at::ScalarType> script_dtype(const ScriptTrainConfig& c);

// --loss: a loss of PyTorch by name, or "FILE.pt[:METHOD]", a scripted one.
LossFn script_loss(const ScriptTrainConfig& c);

}  // namespace tpipe
