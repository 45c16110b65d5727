// Profiling tpipe train's GPT (see gpt_profile.h).
#include "gpt_profile.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "tpipe/calibrate.h"
#include "tpipe/data/char_corpus.h"
#include "tpipe/machine/facts.h"
#include "tpipe/models/gpt.h"
#include "tpipe/profile.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::cli {

namespace {

// This process computes with a rank's threads: LibTorch's and, where it has its own, the BLAS's
// (unset, OpenBLAS ran its own 2 threads beside LibTorch's 1 and small layers took 2x longer).
class RankThreads {
 public:
  explicit RankThreads(int threads) : torch_(at::get_num_threads()), blas_(set_blas_threads(threads)) {
    at::set_num_threads(threads);
  }
  ~RankThreads() {
    at::set_num_threads(torch_);
    if (blas_ > 0) set_blas_threads(blas_);
  }
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

 private:
  int torch_, blas_;
};

}  // namespace

GptProfile profile_gpt(const TrainConfig& c, int ranks, int repeats) {
  const CharCorpus corpus = CharCorpus::load(c.data);
  corpus.check_fits(c.seq_len);
  GptProfile p;
  p.corpus = corpus.source();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  p.threads = std::max(1, cores / std::max(1, ranks));
  const RankThreads threads(p.threads);
  ProfileOptions o;
  o.repeats = repeats;
  o.split_backward = true;  // the planner prices zero-bubble schedules' B and W
  const auto sample = corpus.batch(false, 0, c.microbatch_size, c.seq_len, c.seed).first;
  const auto specs = gpt_layers(model_config(c, corpus.vocab_size()));
  p.layers = profile_layers(specs, {sample}, o);
  if (c.microbatch_size > 1)  // what a micro-batch costs whatever its size
    p.layers_fewer_rows = profile_layers(specs, {sample.narrow(0, 0, 1)}, o);
  // Scaled to the engine's own actions on this process (calibrate.h). Timing them on the probe's
  // ranks instead predicted 2-rank steps 16-42 % fast where this did 5-22 %.
  constexpr int kMicrobatches = 4;
  const auto [x, y] = corpus.batch(false, 0, kMicrobatches * c.microbatch_size, c.seq_len, c.seed);
  p.calibration = calibration_of(time_stages_alone(specs, gpt_loss(), {x}, {y}, kMicrobatches), p.layers);
  p.layers = calibrated(p.layers, p.calibration);
  p.layers_fewer_rows = calibrated(p.layers_fewer_rows, p.calibration);
  p.optimizer_s_per_weight_byte = optimizer_seconds_per_weight_byte(c, corpus.vocab_size());
  p.cores = cores;
  p.tied_bytes = static_cast<double>(corpus.vocab_size()) * c.dim * sizeof(float);
  return p;
}

}  // namespace tpipe::cli
