// Profiling tpipe train's GPT (see gpt_profile.h).
#include "gpt_profile.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "tpipe/data/char_corpus.h"
#include "tpipe/models/gpt.h"
#include "tpipe/profile.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::cli {

GptProfile profile_gpt(const TrainConfig& c, int ranks, int repeats) {
  const CharCorpus corpus = CharCorpus::load(c.data);
  corpus.check_fits(c.seq_len);
  GptProfile p;
  p.corpus = corpus.source();
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  p.threads = std::max(1, cores / std::max(1, ranks));
  const int before = at::get_num_threads();
  at::set_num_threads(p.threads);
  ProfileOptions o;
  o.repeats = repeats;
  o.split_backward = true;  // the planner prices zero-bubble schedules' B and W
  const auto sample = corpus.batch(false, 0, c.microbatch_size, c.seq_len, c.seed).first;
  p.layers = profile_layers(gpt_layers(model_config(c, corpus.vocab_size())), {sample}, o);
  if (c.microbatch_size > 1)  // what a micro-batch costs whatever its size
    p.layers_fewer_rows = profile_layers(gpt_layers(model_config(c, corpus.vocab_size())), {sample.narrow(0, 0, 1)}, o);
  p.optimizer_s_per_weight_byte = optimizer_seconds_per_weight_byte(c, corpus.vocab_size());
  at::set_num_threads(before);
  p.cores = cores;
  p.tied_bytes = static_cast<double>(corpus.vocab_size()) * c.dim * sizeof(float);
  return p;
}

}  // namespace tpipe::cli
