// A small decoder-only transformer (GPT) as a list of LayerSpecs, so a pipeline rank builds only
// the layers of its own stage. The output projection is tied to the token embedding: both
// positions hold the key "wte", and the engine keeps their copies equal across stages.
//
//   tpipe::GptConfig cfg;                      // vocab 96, dim 64, 4 heads, 2 blocks, 32 tokens
//   tpipe::PipelineEngine engine(tpipe::gpt_layers(cfg), tpipe::gpt_loss(), make_adam, comm);
//   engine.train_batch({ids}, {next_ids});     // ids, next_ids: [B,T] int64, T <= seq_len
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "tpipe/engine.h"
#include "tpipe/layer.h"

namespace tpipe {

struct GptConfig {
  int vocab = 96;
  int dim = 64;
  int heads = 4;
  int layers = 2;   // transformer blocks
  int seq_len = 32;  // longest sequence the position embedding covers
  at::ScalarType dtype = at::kFloat;
  std::uint64_t seed = 0;  // every layer draws its initial weights from (seed, layer name)
  // Dropout on the embeddings, the attention weights and each residual branch (nanoGPT's places).
  // Every layer draws its masks from a generator of its own seeded by (seed, layer name), so a
  // step draws the same masks however the model is cut, as long as each stage runs its
  // micro-batches in order (every schedule does), and activation checkpointing replays them.
  double dropout = 0;
};

// Throws ConfigError naming the offending option, e.g. "--dim 65 is not divisible by --heads 4".
void check_config(const GptConfig& c);

// embed (tied "wte"), pos, block0 .. block{layers-1}, ln_f, lm_head (tied "wte").
// Payloads: {ids [B,T] int64} -> embed -> {h [B,T,dim]} -> ... -> lm_head -> {logits [B,T,vocab]}.
// Parameters are named "<layer>.<param>" ("block0.attn.qkv.weight"); the tie is "wte.weight".
// Weights do not depend on the global RNG, so threads and processes all build the same model.
std::vector<LayerSpec> gpt_layers(const GptConfig& c);

// Floating-point operations of one training step per token at sequence length t (forward and
// backward, the usual 6 x matmul parameters + 12 x layers x t x dim for attention's two products;
// layer norms, softmax and the embedding lookup are left out): the numerator of achieved GFLOP/s.
double gpt_flops_per_token(const GptConfig& c, int t);

// Cross-entropy of logits [B,T,V] against target ids [B,T] (int64), mean over all B*T tokens.
LossFn gpt_loss();

}  // namespace tpipe
