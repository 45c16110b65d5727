// The GPT of tpipe train's flags, profiled layer by layer on one micro-batch of its training
// text (profile.h), for tpipe partition and tpipe plan.
#pragma once

#include <string>
#include <vector>

#include "tpipe/partition.h"
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

}  // namespace tpipe::cli
