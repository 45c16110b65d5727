// The flags that describe the GPT, its batch and its layout, shared by tpipe train, partition and
// plan. `opt(name, &TrainConfig::member, help)` adds one; each command adds them its own way.
#pragma once

#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "tpipe/train/train_config.h"

namespace tpipe::cli {

// The model and one micro-batch of it.
template <class Opt>
void model_flags(Opt&& opt) {
  opt("--layers", &TrainConfig::layers, "transformer blocks");
  opt("--dim", &TrainConfig::dim, "model width");
  opt("--heads", &TrainConfig::heads, "attention heads (must divide --dim)");
  opt("--seq-len", &TrainConfig::seq_len, "characters per training sequence");
  opt("--microbatch-size", &TrainConfig::microbatch_size, "sequences per micro-batch");
  opt("--dropout", &TrainConfig::dropout, "dropout probability (embeddings, attention, residual branches)");
  opt("--data", &TrainConfig::data, "train on this text file instead of the King James Bible");
}

// The model flags of `c` as command-line arguments ("--layers", "4", ...), for the processes a
// command starts; a flag whose value is empty (--data: the built-in corpus) is left out.
inline std::vector<std::string> model_args(const TrainConfig& c) {
  std::vector<std::string> args;
  model_flags([&](const char* name, auto TrainConfig::*member, const char*) {
    std::ostringstream value;
    value << std::setprecision(17) << c.*member;
    if (value.str().empty()) return;
    args.push_back(name);
    args.push_back(value.str());
  });
  return args;
}

// How it is cut and scheduled.
template <class Opt>
void layout_flags(Opt&& opt) {
  opt("--stages", &TrainConfig::stages, "pipeline stages");
  opt("--microbatches", &TrainConfig::microbatches, "micro-batches per replica and step");
  opt("--schedule", &TrainConfig::schedule,
      "naive | gpipe | 1f1b | zb-h1 | interleaved-1f1b | zb-v, or a file of actions (one line per rank)");
  opt("--virtual-stages", &TrainConfig::virtual_stages,
      "stages per rank (interleaved-1f1b: any; zb-v: 2); 0: the schedule's own");
  opt("--partition", &TrainConfig::partition,
      "uniform, layers per stage such as 2,4,2, parameters (balance parameter counts), type:REGEX (balance "
      "the layers whose name matches, e.g. type:block) or profile (balance the time measured on a micro-batch)");
  opt("--checkpoint", &TrainConfig::checkpoint,
      "activation checkpointing: always | except_last (all but the last micro-batch) | never; a checkpointed "
      "micro-batch keeps only its stage input and is recomputed before its backward");
}

}  // namespace tpipe::cli
