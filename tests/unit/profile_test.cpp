// profile_layers on layers whose costs are known by construction.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tpipe/error.h"
#include "tpipe/profile.h"

namespace tpipe {
namespace {

struct MapImpl : torch::nn::Module {
  explicit MapImpl(int dim) { w = register_parameter("w", torch::randn({dim, dim}, torch::kDouble)); }
  at::Tensor w;
};

// x <- x W: keeps only its output (u = rows x dim x 8 bytes) for the backward.
LayerSpec map(const std::string& name, int dim) {
  return {name, [dim] {
            auto m = std::make_shared<MapImpl>(dim);
            return tensor_layer(m, [m](const at::Tensor& x) { return x.mm(m->w); }, std::vector<at::Generator>{});
          }};
}

TEST(Profile, MeasuresBytesExactlyAndTimesEveryLayer) {
  // The wide map needs a wide input: a layer between them widens by repetition.
  const std::vector<LayerSpec> model{map("a", 16), {"widen", [] {
                                                       return function_layer([](const Payload& p) {
                                                         return Payload{p[0].repeat({1, 16})};
                                                       });
                                                     }},
                                     map("b", 256)};
  // Medians of 7: a layer is timed in microseconds here, and one preemption of a test process on a
  // busy machine outlasts it (with 3, the 256x larger layer once measured under 10x the small one).
  ProfileOptions o;
  o.repeats = 7;
  const auto facts = profile_layers(model, {torch::ones({32, 16}, torch::kDouble)}, o);
  ASSERT_EQ(facts.size(), 3u);
  EXPECT_EQ(facts[0].name, "a");
  EXPECT_EQ(facts[0].rows, 32);
  EXPECT_EQ(facts[0].parameters, 16 * 16);
  EXPECT_EQ(facts[0].parameter_bytes, 16 * 16 * 8);
  EXPECT_EQ(facts[0].activation_bytes, 32 * 16 * 8);  // its output
  EXPECT_EQ(facts[0].output_bytes, 32 * 16 * 8);
  EXPECT_EQ(facts[1].parameters, 0);
  EXPECT_EQ(facts[1].output_bytes, 32 * 256 * 8);
  EXPECT_EQ(facts[2].activation_bytes, 32 * 256 * 8);
  EXPECT_EQ(facts[2].parameter_bytes, 256 * 256 * 8);
  for (const auto& f : facts) EXPECT_GT(f.forward_s, 0) << f.name;
  EXPECT_GT(facts[2].forward_s + facts[2].backward_s, 3 * (facts[0].forward_s + facts[0].backward_s))
      << "256^2 x 32 against 16^2 x 32 multiply-adds: the layers' times are not each their own";
}

// The backward split into B and W is timed only when asked (the engine's profile cut does not use it).
TEST(Profile, TimesTheSplitBackwardOnlyWhenAsked) {
  const std::vector<LayerSpec> model{map("a", 64), map("b", 64)};
  const Payload sample{torch::ones({32, 64}, torch::kDouble)};
  for (const auto& f : profile_layers(model, sample)) {
    EXPECT_EQ(f.input_grad_s, 0.0) << f.name;
    EXPECT_EQ(f.weight_grad_s, 0.0) << f.name;
  }
  ProfileOptions o;
  o.split_backward = true;
  for (const auto& f : profile_layers(model, sample, o)) {
    EXPECT_GT(f.input_grad_s + f.weight_grad_s, 0.0) << f.name;
    EXPECT_GT(f.backward_s, 0.0) << f.name << ": the whole backward is timed as before";
  }
}

TEST(Profile, LeavesTheGlobalGeneratorAsItWas) {
  torch::manual_seed(5);
  const auto expected = torch::rand({3});
  torch::manual_seed(5);
  profile_layers({map("a", 8), map("b", 8)}, {torch::ones({4, 8}, torch::kDouble)});
  EXPECT_TRUE(torch::equal(torch::rand({3}), expected));
}

TEST(Profile, NamesTheLayerThatFailsOnTheSample) {
  try {
    profile_layers({map("a", 8), map("b", 9)}, {torch::ones({4, 8}, torch::kDouble)});
    FAIL() << "a [4,8] input cannot go through a [9,9] map";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("profiling layer 1 'b' on the sample failed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(profile_layers({map("a", 8)}, {}), ConfigError);
}

}  // namespace
}  // namespace tpipe
