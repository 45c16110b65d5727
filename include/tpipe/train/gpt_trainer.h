// The main job as a library function: train the tied-embedding GPT on a character corpus,
// pipelined over the Communicator's ranks (stages x dp), with periodic validation, metrics,
// trace and timeline, and a generated sample at the end. `tpipe train` parses flags into a
// TrainConfig, checks it, launches the ranks and calls train_gpt on each.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tpipe/comm/communicator.h"
#include "tpipe/data/char_corpus.h"

namespace tpipe {

struct TrainConfig {
  int stages = 2;
  int dp = 1;
  int microbatches = 4;
  int microbatch_size = 8;          // sequences per micro-batch: global batch = size x m x dp
  std::string schedule = "1f1b";
  int virtual_stages = 0;           // stages per rank; 0: the schedule's (2 for interleaved-1f1b, zb-v)
  std::string partition = "uniform";  // over stages x virtual stages
  int layers = 4;                   // transformer blocks
  int dim = 128;
  int heads = 4;
  int seq_len = 64;
  int steps = 600;
  double lr = 3e-3;
  std::string optimizer = "adamw";  // sgd | adam | adamw
  double clip = 1.0;                // global gradient-norm clipping; 0: off
  std::uint64_t seed = 0;
  std::string data;                 // text file; empty: the King James Bible
  std::string out = "out/train";    // trace.json, timeline.svg, metrics.jsonl go here by default
  std::string trace, timeline, metrics;  // override the file names; "-": do not write
  int eval_every = 50;
  int eval_batches = 4;
  int sample_chars = 300;
  std::string checkpoints;          // where checkpoints go; empty: --out; "-": none
  int save_every = 0;               // also save every K steps (0: only at the end)
  int keep = 0;                     // keep the newest N checkpoints (0: all)
  std::string resume;               // a checkpoint (or a directory of them), "auto": the newest
                                    // in the checkpoint directory if there is one
  int stop_after = 0;               // end cleanly after this step, with a checkpoint (0: run --steps)
};

// The checkpoint directory of a run ("" when it saves none).
std::string checkpoint_root(const TrainConfig& c);

// Throws ConfigError with one line naming the flag (unknown schedule or optimizer, --stages
// larger than the layers to cut, --dim not divisible by --heads, a --data file that cannot be
// read, ...). Needs no ranks and no corpus.
void check_train_config(const TrainConfig& c);

// The same keys as the flags (without dashes, "seq_len"); unknown keys are an error.
void update_from_json(TrainConfig& c, const nlohmann::json& j);
nlohmann::json to_json(const TrainConfig& c);

// The checkpoint a run resumes from: std::nullopt for a fresh run (no --resume, or "auto" and
// none saved yet). Throws ConfigError when --resume names no checkpoint or one this run cannot
// continue: another model, seed, corpus or optimizer, another --steps (the learning-rate
// schedule is a function of it), or one already at the last step. Reads only the manifest.
std::optional<std::string> checkpoint_to_resume(const TrainConfig& c);

struct TrainProgress {
  int step = 0;
  int steps = 0;
  double loss = 0;
  std::optional<double> val_loss;
  double tokens_per_s = 0;  // this step
  double elapsed_s = 0;     // training time so far
};

struct TrainSummary {
  std::vector<double> losses;                    // every step, on every rank
  std::vector<std::pair<int, double>> val_losses;  // (step, loss)
  double unigram_entropy = 0;                    // nats, of the training text
  double tokens_per_s = 0;                       // over the whole run (rank 0's clock)
  double flops_per_token = 0;                    // gpt_flops_per_token of the model trained
  double bubble = -1;                            // mean measured bubble (rank 0; -1 elsewhere)
  std::string sample;                            // generated text (every rank; empty when stopped early)
  int first_step = 1;                            // 1, or the step after the checkpoint resumed from
  int last_step = 0;                             // --steps, or --stop-after
  std::string checkpoint;                        // the last one saved ("" if none)
};

// Runs on every rank. `progress` is called on rank 0 after each step, `note` on rank 0 with a
// line for the user (what a resume loaded, where a checkpoint was saved).
TrainSummary train_gpt(const TrainConfig& c, const CharCorpus& corpus, Communicator& comm,
                       const std::function<void(const TrainProgress&)>& progress = {},
                       const std::function<void(const std::string&)>& note = {});

}  // namespace tpipe
