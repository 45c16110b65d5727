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
  const auto sample = corpus.batch(false, 0, c.microbatch_size, c.seq_len, c.seed).first;
  p.layers = profile_layers(gpt_layers(model_config(c, corpus.vocab_size())), {sample}, o);
  at::set_num_threads(before);
  return p;
}

Costs stage_costs_of(const std::vector<LayerFacts>& layers, const Partition& cut, const Schedule& s,
                     const std::string& checkpoint) {
  bool split = false;
  for (const auto& rank : s.ranks)
    for (const Action& a : rank) split = split || a.op == Op::Weight;
  // The share of the micro-batches that are checkpointed: their backward recomputes the forward.
  const int m = s.num_microbatches;
  const double recompute = checkpoint == "always" ? 1.0 : checkpoint == "except_last" && m > 0 ? (m - 1.0) / m : 0.0;
  Costs costs;
  for (int st = 0; st < cut.num_stages(); ++st) {
    double f = 0, b = 0;
    for (int l = cut.begin(st); l < cut.end(st); ++l) {
      f += layers[l].forward_s;
      b += layers[l].backward_s;
    }
    costs.forward_by_stage.push_back(f);
    costs.backward_by_stage.push_back((split ? b / 2 : b) + recompute * f);
    costs.weight_by_stage.push_back(split ? b / 2 : 0.0);
  }
  return costs;
}

}  // namespace tpipe::cli
