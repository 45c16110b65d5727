// The main job learns, and the pipeline is invisible in its numbers: the default GPT trained a
// few dozen steps with pp = 2 ends below the corpus's unigram character entropy (a model that
// learned nothing cannot), and the same run with pp = 1 gives the same losses (float32, 1e-5).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <mutex>

#include "ranks.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe::testing {
namespace {

TrainSummary train(int stages, const CharCorpus& corpus) {
  TrainConfig c;  // the default model
  c.stages = stages;
  c.steps = 40;
  c.eval_every = 40;
  c.sample_chars = 0;
  c.trace = c.timeline = c.metrics = c.checkpoints = "-";
  TrainSummary out;
  std::mutex mu;
  expect_ranks_ok(stages, [&](Communicator& comm) {
    const TrainSummary s = train_gpt(c, corpus, comm);
    std::lock_guard<std::mutex> lock(mu);
    if (comm.rank() == 0) out = s;
  });
  return out;
}

TEST(Train, DefaultGptLearnsAndThePipelineIsInvisible) {
  const CharCorpus corpus = CharCorpus::load();  // the King James Bible
  const TrainSummary two = train(2, corpus);
  ASSERT_EQ(two.val_losses.size(), 1u);
  EXPECT_LT(two.val_losses.back().second, corpus.unigram_entropy())
      << "validation loss " << two.val_losses.back().second << " vs unigram entropy " << corpus.unigram_entropy();
  const TrainSummary one = train(1, corpus);
  ASSERT_EQ(one.losses.size(), two.losses.size());
  double worst = 0;
  for (std::size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(two.losses[i], one.losses[i], 1e-5 * one.losses[i]) << "step " << i + 1;
    worst = std::max(worst, std::abs(two.losses[i] - one.losses[i]) / one.losses[i]);
  }
  std::cout << "validation loss " << two.val_losses.back().second << " nats < unigram entropy "
            << corpus.unigram_entropy() << "; largest relative loss difference pp=2 vs pp=1: " << worst << "\n";
  EXPECT_NEAR(two.val_losses.back().second, one.val_losses.back().second, 1e-5 * one.val_losses.back().second);
}

TEST(Train, CorpusBasics) {
  const CharCorpus c = CharCorpus::from_text(std::string(600, 'a') + std::string(600, 'b'));
  EXPECT_EQ(c.vocab_size(), 2);
  EXPECT_EQ(c.decode(c.encode("abba")), "abba");
  EXPECT_THROW(CharCorpus::from_text("short"), ConfigError);
  const auto [x, y] = c.batch(false, 3, 4, 8, 0);
  EXPECT_EQ(x.sizes(), (std::vector<std::int64_t>{4, 8}));
  EXPECT_TRUE(torch::equal(x.narrow(1, 1, 7), y.narrow(1, 0, 7))) << "targets are inputs shifted by one";
  EXPECT_TRUE(torch::equal(c.batch(false, 3, 4, 8, 0).first, x)) << "deterministic";
}

}  // namespace
}  // namespace tpipe::testing
