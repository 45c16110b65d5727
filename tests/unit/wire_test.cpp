// Message headers: round trip, undefined tensors, limits, corruption.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "tpipe/comm/wire.h"
#include "tpipe/error.h"

namespace tpipe::wire {
namespace {

TEST(Wire, HeaderRoundTrip) {
  const Payload p{torch::zeros({8, 512}), at::Tensor(), torch::zeros({3}, torch::kLong), torch::tensor(true)};
  const Header h = decode(encode(describe(p, Kind::Gradient, 5, 2)));
  EXPECT_EQ(h.kind, Kind::Gradient);
  EXPECT_EQ(h.mb, 5);
  EXPECT_EQ(h.sender_stage, 2);
  ASSERT_EQ(h.tensors.size(), 4u);
  EXPECT_EQ(to_string(h.tensors[0]), "[8,512] float");
  EXPECT_EQ(to_string(h.tensors[1]), "none");
  EXPECT_EQ(to_string(h.tensors[2]), "[3] long");
  EXPECT_EQ(to_string(h.tensors[3]), "[] bool");
  const Payload buffers = allocate(h);
  EXPECT_EQ(buffers[0].sizes(), (std::vector<std::int64_t>{8, 512}));
  EXPECT_FALSE(buffers[1].defined());
  EXPECT_EQ(buffers[2].scalar_type(), torch::kLong);
}

TEST(Wire, TooManyTensorsOrDimsIsAShapeError) {
  EXPECT_THROW(encode(describe(Payload(16, torch::zeros({1})), Kind::Activation, 0, 0)), ShapeError);
  EXPECT_THROW(encode(describe(Payload(12, torch::zeros({1, 1, 1, 1})), Kind::Activation, 0, 0)), ShapeError);
}

TEST(Wire, CorruptHeaderIsACommError) {
  EXPECT_THROW(decode(empty_header()), CommError);
}

TEST(Wire, TagsAreDistinctPerKindMicroBatchLinkTensorAndPrediction) {
  std::set<int> tags;
  for (Kind k : {Kind::Activation, Kind::Gradient, Kind::Clock, Kind::Trace})
    for (int mb : {0, 1, 2, 63, kMaxMicrobatches - 1})
      for (int link : {0, 1, kMaxLinks - 1}) {
        EXPECT_TRUE(tags.insert(header_tag(k, mb, link)).second);
        for (int i = 0; i < kMaxTensors; ++i)
          for (bool predicted : {true, false}) EXPECT_TRUE(tags.insert(data_tag(k, mb, link, i, predicted)).second);
      }
  EXPECT_EQ(tags.size(), 4u * 5 * 3 * (1 + 2 * kMaxTensors));
  EXPECT_EQ(*tags.begin(), 0);
  EXPECT_GT(*tags.rbegin(), 0);  // the largest tag does not overflow
}

TEST(Wire, MicroBatchOrLinkOutOfRangeHasNoTag) {
  EXPECT_THROW(header_tag(Kind::Activation, kMaxMicrobatches, 0), ConfigError);
  EXPECT_THROW(header_tag(Kind::Activation, 0, kMaxLinks), ConfigError);
  EXPECT_THROW(data_tag(Kind::Gradient, -1, 0, 0, true), ConfigError);
}

}  // namespace
}  // namespace tpipe::wire
