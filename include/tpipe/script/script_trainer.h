// The TorchScript front door as a library function: train a model written in PyTorch (a
// TorchScript file) on data saved with torch.save, pipelined over the Communicator's ranks, with
// every feature `tpipe train` has that applies (metrics, trace, timeline, checkpoints and resume,
// learning-rate schedule, clipping, activation checkpointing). Its defaults are a plain PyTorch
// loop's -- constant learning rate, no clipping, no weight decay, the file's dtype -- so that loop
// is the reference. `tpipe train-script` parses flags into a ScriptTrainConfig, checks it,
// launches the ranks and calls train_script on each.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tpipe/comm/communicator.h"
#include "tpipe/train/progress.h"

namespace tpipe {

struct ScriptTrainConfig {
  std::string model, data;          // TorchScript file; torch.save file of (inputs, targets)
  std::string loss = "mse";          // cross_entropy | mse | nll, or FILE.pt[:METHOD] (scripted)
  int stages = 2, dp = 1, microbatches = 4, virtual_stages = 0;
  std::string schedule = "1f1b", partition = "uniform", checkpoint = "never";
  int steps = 10;
  std::int64_t batch_size = 0;       // rows a step, consecutive slices of the data; 0: all of it
  double lr = 0.01;
  std::string lr_schedule = "constant";  // constant | cosine (PyTorch's CosineAnnealingLR, T_max = steps)
  std::string optimizer = "sgd";     // sgd | adam | adamw, with PyTorch's defaults
  double momentum = 0, weight_decay = 0, clip = 0;  // clip: global gradient norm; 0: off
  std::string dtype;                 // float32 | float64; empty: the model file's
  std::uint64_t seed = 0;            // of the process generator (dropout): replica r gets seed + r
  std::string out = "out/train-script";
  std::string trace, timeline, metrics;  // default OUT/trace.json, ...; "-": not written
  std::string checkpoints;           // where checkpoints go; empty: --out; "-": none
  int save_every = 0, keep = 0, stop_after = 0;
  std::string resume;                // a checkpoint, its directory, or "auto"
  std::string on_nonfinite = "stop";  // stop | skip
  std::string export_path;           // write the trained model as one TorchScript file
  double timeout = 300;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ScriptTrainConfig, model, data, loss, stages, dp, microbatches,
                                                virtual_stages, schedule, partition, checkpoint, steps, batch_size,
                                                lr, lr_schedule, optimizer, momentum, weight_decay, clip, dtype, seed,
                                                out, trace, timeline, metrics, checkpoints, save_every, keep,
                                                stop_after, resume, on_nonfinite, export_path, timeout)

// Every check that needs no rank, each a ConfigError of one line naming the flag: the files load,
// the loss is known, the layout can be made, the numbers are in range, a checkpoint to resume fits.
void check_script_config(const ScriptTrainConfig& c);

// The checkpoint directory ("" when the run saves none) and the checkpoint a run resumes from
// (std::nullopt for a fresh run); the latter throws ConfigError as checkpoint_to_resume in
// run_checkpoints.h, with the model, data, loss, optimizer, dtype, batch size and seed to match.
std::string checkpoint_root(const ScriptTrainConfig& c);
std::optional<std::string> checkpoint_to_resume(const ScriptTrainConfig& c);

struct ScriptTrainSummary {
  std::vector<double> losses;  // the steps this run trained, on every rank
  int first_step = 1, last_step = 0;
  double rows_per_s = 0;       // over the run (rank 0's clock)
  double bubble = -1;          // mean measured bubble (rank 0; -1 elsewhere)
  std::string checkpoint;      // the last one saved ("" if none)
  int skipped_steps = 0;
  std::vector<std::int64_t> activation_peak_bytes, memory_peak_bytes;  // by rank
};

// Runs on every rank; `progress` is called on rank 0 after each step, `note` on rank 0 with lines
// for the user. With export_path, rank 0 writes the trained model (every stage's weights) there.
ScriptTrainSummary train_script(const ScriptTrainConfig& c, Communicator& comm,
                                const std::function<void(const TrainProgress&)>& progress = {},
                                const std::function<void(const std::string&)>& note = {},
                                const std::string& machine_json = "");  // what the program measured, for report.html

}  // namespace tpipe
