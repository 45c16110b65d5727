// The configuration of `tpipe train` (flags, or a JSON file with the same keys) and its checks,
// all made before any rank starts.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

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
  std::string on_nonfinite = "stop";  // a NaN/inf loss or gradient norm: stop the run, or skip the step
  double timeout = 300;             // seconds any rank waits for another before it is an error
  std::string checkpoint = "never";  // activation checkpointing: always | except_last | never
  double dropout = 0;               // the GPT's dropout probability
  std::string plan;                 // "auto": the layout tpipe plan finds best for stages x dp ranks
};

// The most ranks `tpipe train` starts on one machine.
constexpr int kMaxTrainRanks = 256;

// Throws ConfigError with one line naming the flag (unknown schedule or optimizer, --stages
// larger than the layers to cut, --dim not divisible by --heads, a number that is not finite,
// sizes beyond what a rank can hold, a --data file that cannot be read, ...). Needs no ranks and
// no corpus.
void check_train_config(const TrainConfig& c);

// The same keys as the flags (without dashes, "seq_len"). Unknown keys, and values of the wrong
// type ("steps": true, "lr": "fast"), are a ConfigError naming the key and the type expected.
void update_from_json(TrainConfig& c, const nlohmann::json& j);
nlohmann::json to_json(const TrainConfig& c);

// Where an output goes: `chosen`, or <out>/<name> when it is empty; "" for "-" (not written).
std::string output_path(const TrainConfig& c, const std::string& chosen, const char* name);

}  // namespace tpipe
