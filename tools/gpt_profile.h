// The GPT of tpipe train's flags, profiled layer by layer on one micro-batch of its training
// text (profile.h), for tpipe partition and tpipe plan; and the simulator's costs of a cut.
#pragma once

#include <string>
#include <vector>

#include "tpipe/partition.h"
#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/train/train_config.h"

namespace tpipe::cli {

struct GptProfile {
  std::vector<LayerFacts> layers;  // embed, pos, blocks, ln_f, lm_head
  std::string corpus;              // where the sample came from
  int threads = 1;                 // intra-op threads it was measured with
};

// Loads the corpus (its vocabulary sizes the model), builds the model and profiles it with the
// intra-op threads a rank gets among `ranks` on this machine. Prints nothing.
GptProfile profile_gpt(const TrainConfig& c, int ranks, int repeats);

// Seconds per micro-batch of each stage of `cut` (forward; backward, split into B and W where
// `s` has W actions, W taking half), as the simulator's per-stage costs; with activation
// checkpointing a checkpointed backward runs the forward again first.
Costs stage_costs_of(const std::vector<LayerFacts>& layers, const Partition& cut, const Schedule& s,
                     const std::string& checkpoint);

}  // namespace tpipe::cli
