// The GPT of tpipe train's flags, profiled layer by layer on one micro-batch of its training
// text (profile.h), for tpipe partition and tpipe plan.
#pragma once

#include <string>
#include <vector>

#include "tpipe/calibrate.h"
#include "tpipe/partition.h"
#include "tpipe/train/train_config.h"

namespace tpipe::cli {

struct GptProfile {
  std::vector<LayerFacts> layers;  // embed, pos, blocks, ln_f, lm_head
  std::vector<LayerFacts> layers_fewer_rows;  // the same on one sequence (empty when that is the sample)
  std::string corpus;              // where the sample came from
  EngineCalibration calibration;   // what both were scaled by: the engine's actions over the profile
  int threads = 1;                 // intra-op threads it was measured with
  int cores = 1;                   // of this machine, which the ranks share
  double optimizer_s_per_weight_byte = 0;  // the optimizer's step, timed on the whole model
  double tied_bytes = 0;           // the embedding the first and last layer share (wte)
};

// Loads the corpus (its vocabulary sizes the model), builds the model and profiles it with the
// threads a rank gets among `ranks` on this machine, then scales the profile to the engine's own
// actions (calibrate.h). Prints nothing.
GptProfile profile_gpt(const TrainConfig& c, int ranks, int repeats);

// tpipe train --plan auto: the fastest layout that fits on c.stages x c.dp ranks, with the same
// global batch and the machine's memory shared among the ranks, written into `c` (plan cleared).
// Returns a line saying what it chose and what it predicts.
std::string apply_best_layout(TrainConfig& c);

}  // namespace tpipe::cli
