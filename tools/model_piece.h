// The piece of compute the communication probe (comm_probe.h) times alone and beside the other
// ranks: a training step of tpipe train's GPT on one micro-batch, by the engine on the rank alone
// (a world of one rank of its own). GEMMs that fit a core's cache ran 1.0-1.07x slower beside 3
// other ranks than their share of the cores explains; the model itself, whose weights and
// activations do not fit, is what the ranks will compute.
#pragma once

#include <memory>

#include "tpipe/train/train_config.h"

namespace tpipe::cli {

class ModelPiece {
 public:
  explicit ModelPiece(const TrainConfig& c);  // loads the corpus and builds the model
  ~ModelPiece();
  void run();  // forward and backward of one micro-batch (no optimizer)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpipe::cli
