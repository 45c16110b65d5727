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
#include "tpipe/train/progress.h"
#include "tpipe/train/train_config.h"

namespace tpipe {

struct GptConfig;
// The model a configuration trains, for a corpus of `vocab` symbols.
GptConfig model_config(const TrainConfig& c, int vocab);

// Seconds one optimizer step of the configuration's optimizer takes per byte of weights, timed
// on the whole model (for a corpus of `vocab` symbols) with its gradients set: the median of 5
// steps after a warm-up, with this thread's intra-op threads. For the planner's step time.
double optimizer_seconds_per_weight_byte(const TrainConfig& c, int vocab);

// The checkpoint directory of a run ("" when it saves none).
std::string checkpoint_root(const TrainConfig& c);

// The checkpoint a run resumes from: std::nullopt for a fresh run (no --resume, or "auto" and
// none saved yet). Throws ConfigError when --resume names no checkpoint or one this run cannot
// continue: another model, seed, corpus or optimizer, another --steps (the learning-rate
// schedule is a function of it), or one already at the last step. Reads only the manifest.
std::optional<std::string> checkpoint_to_resume(const TrainConfig& c);

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
  int skipped_steps = 0;                         // --on-nonfinite skip: steps not applied
  // Measured over the run, by rank (every rank): the largest activation peak of a step and the
  // most tensor storage held (StepResult::activation_peak_bytes, memory_peak_bytes).
  std::vector<std::int64_t> activation_peak_bytes;
  std::vector<std::int64_t> memory_peak_bytes;
};

// Runs on every rank. `progress` is called on rank 0 after each step, `note` on rank 0 with a
// line for the user (what a resume loaded, where a checkpoint was saved).
TrainSummary train_gpt(const TrainConfig& c, const CharCorpus& corpus, Communicator& comm,
                       const std::function<void(const TrainProgress&)>& progress = {},
                       const std::function<void(const std::string&)>& note = {},
                       const std::string& machine_json = "");  // what the program measured, for report.html

}  // namespace tpipe
