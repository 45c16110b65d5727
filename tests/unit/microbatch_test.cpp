// Splitting payloads into micro-batches: uneven sizes, replicated tensors, every dtype.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tpipe/error.h"
#include "tpipe/microbatch.h"

namespace tpipe {
namespace {

TEST(Microbatch, SizesDifferByAtMostOneLargerFirst) {
  EXPECT_EQ(microbatch_sizes(10, 4), (std::vector<std::int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(microbatch_sizes(8, 4), (std::vector<std::int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(microbatch_sizes(5, 1), (std::vector<std::int64_t>{5}));
  EXPECT_EQ(microbatch_sizes(3, 3), (std::vector<std::int64_t>{1, 1, 1}));
}

TEST(Microbatch, SplitsEveryDtypeAndReplicatesNonBatchTensors) {
  const Payload batch{torch::arange(10, torch::kDouble).reshape({10, 1}), torch::arange(10, torch::kLong),
                      torch::arange(10).remainder(2).to(torch::kBool), torch::arange(20, torch::kFloat).reshape({10, 2}),
                      torch::tensor({7.0, 8.0})};
  const auto parts = split_microbatches(
      batch, 4, {Chunking::Batch, Chunking::Batch, Chunking::Batch, Chunking::Batch, Chunking::Replicate});
  ASSERT_EQ(parts.size(), 4u);
  const std::vector<std::vector<std::int64_t>> rows{{0, 1, 2}, {3, 4, 5}, {6, 7}, {8, 9}};
  for (int k = 0; k < 4; ++k) {
    const auto want = torch::tensor(rows[k], torch::kLong);
    EXPECT_TRUE(torch::equal(parts[k][0].flatten(), want.to(torch::kDouble))) << k;
    EXPECT_TRUE(torch::equal(parts[k][1], want)) << k;
    EXPECT_TRUE(torch::equal(parts[k][2], want.remainder(2).to(torch::kBool))) << k;
    EXPECT_EQ(parts[k][3].sizes(), (std::vector<std::int64_t>{static_cast<std::int64_t>(rows[k].size()), 2}));
    EXPECT_TRUE(torch::equal(parts[k][4], torch::tensor({7.0, 8.0}))) << "replicated whole";
    EXPECT_EQ(parts[k][1].scalar_type(), torch::kLong);
    EXPECT_EQ(parts[k][2].scalar_type(), torch::kBool);
  }
  const Payload back = gather_microbatches(
      parts, {Chunking::Batch, Chunking::Batch, Chunking::Batch, Chunking::Batch, Chunking::Replicate});
  for (std::size_t i = 0; i < batch.size(); ++i) EXPECT_TRUE(torch::equal(back[i], batch[i])) << i;
}

TEST(Microbatch, DefaultChunkingReplicatesScalars) {
  const Payload p{torch::zeros({4, 3}), torch::tensor(2.5)};
  EXPECT_EQ(default_chunking(p), (std::vector<Chunking>{Chunking::Batch, Chunking::Replicate}));
  const auto parts = split_microbatches(p, 2);
  EXPECT_EQ(parts[1][0].size(0), 2);
  EXPECT_EQ(parts[1][1].item<double>(), 2.5);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Microbatch, BadInputSaysWhat) {
  EXPECT_EQ(error_of([] { split_microbatches({torch::zeros({3, 2})}, 4); }),
            "a batch of 3 cannot be split into 4 micro-batches; use at most 3 micro-batches or a larger batch");
  EXPECT_EQ(error_of([] { split_microbatches({torch::zeros({4}), torch::zeros({5})}, 2); }),
            "payload tensor 1 has 5 rows, but tensor 0 of the batch has 4");
  EXPECT_EQ(error_of([] { split_microbatches({torch::zeros({4})}, 2, {Chunking::Batch, Chunking::Batch}); }),
            "the chunking spec names 2 tensors, but the payload has 1");
  EXPECT_EQ(error_of([] { split_microbatches({torch::zeros({4})}, 0); }), "need at least one micro-batch, got 0");
}

}  // namespace
}  // namespace tpipe
