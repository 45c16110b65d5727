// The probe's compute (see model_piece.h).
#include "model_piece.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "tpipe/data/char_corpus.h"
#include "tpipe/engine.h"
#include "tpipe/models/gpt.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::cli {

struct ModelPiece::Impl {
  Communicator comm{0, 1, c10::make_intrusive<c10d::HashStore>()};
  std::unique_ptr<PipelineEngine> engine;
  Payload x, y;
};

ModelPiece::ModelPiece(const TrainConfig& c) : impl_(std::make_unique<Impl>()) {
  const CharCorpus corpus = CharCorpus::load(c.data);
  corpus.check_fits(c.seq_len);
  const auto [x, y] = corpus.batch(false, 0, c.microbatch_size, c.seq_len, c.seed);
  impl_->x = {x};
  impl_->y = {y};
  EngineOptions o;
  o.microbatches = 1;
  impl_->engine = std::make_unique<PipelineEngine>(gpt_layers(model_config(c, corpus.vocab_size())), gpt_loss(),
                                                   nullptr, impl_->comm, o);
}

ModelPiece::~ModelPiece() = default;

void ModelPiece::run() { impl_->engine->train_batch(impl_->x, impl_->y); }

}  // namespace tpipe::cli
