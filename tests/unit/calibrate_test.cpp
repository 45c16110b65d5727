// Calibrating a profile against the engine (calibrate.h): the ratios on made-up timings, and the
// engine's own run on a small model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tpipe/calibrate.h"
#include "tpipe/error.h"

namespace tpipe {
namespace {

LayerFacts facts(double f, double b, double in, double wt) {
  LayerFacts l;
  l.forward_s = f;
  l.backward_s = b;
  l.input_grad_s = in;
  l.weight_grad_s = wt;
  return l;
}

TEST(Calibrate, RatiosPoolTheStagesAndSkipTheFirstStagesSplit) {
  const std::vector<LayerFacts> layers{facts(1, 2, 1, 1), facts(2, 4, 3, 1), facts(3, 6, 4, 2), facts(4, 8, 5, 3)};
  StageTimes whole{partition_explicit({2, 2}, 4), {}};
  whole.seconds[{0, Op::Forward}] = 6;    // profile 1 + 2
  whole.seconds[{1, Op::Forward}] = 7;    // profile 3 + 4
  whole.seconds[{0, Op::Backward}] = 9;   // profile 2 + 4
  whole.seconds[{1, Op::Backward}] = 21;  // profile 6 + 8
  StageTimes split{partition_explicit({1, 3}, 4), {}};
  split.seconds[{0, Op::Forward}] = 2;    // profile 1
  split.seconds[{1, Op::Forward}] = 9;    // profile 9
  split.seconds[{0, Op::Backward}] = 50;  // the first stage's: not counted
  split.seconds[{0, Op::Weight}] = 50;
  split.seconds[{1, Op::Backward}] = 24;  // profile 3 + 4 + 5
  split.seconds[{1, Op::Weight}] = 3;     // profile 1 + 2 + 3
  const EngineCalibration c = calibration_of({whole, split}, layers);
  EXPECT_DOUBLE_EQ(c.forward, (6.0 + 7 + 2 + 9) / (3 + 7 + 1 + 9));
  EXPECT_DOUBLE_EQ(c.backward, 30.0 / 20);
  EXPECT_DOUBLE_EQ(c.input_grad, 24.0 / 12);
  EXPECT_DOUBLE_EQ(c.weight_grad, 3.0 / 6);

  const auto scaled = calibrated(layers, c);
  EXPECT_DOUBLE_EQ(scaled[3].forward_s, 4 * c.forward);
  EXPECT_DOUBLE_EQ(scaled[3].backward_s, 8 * c.backward);
  EXPECT_DOUBLE_EQ(scaled[3].input_grad_s, 5 * c.input_grad);
  EXPECT_DOUBLE_EQ(scaled[3].weight_grad_s, 3 * c.weight_grad);
}

TEST(Calibrate, NothingToCompareIsOneAndAMismatchedProfileIsRefused) {
  const std::vector<LayerFacts> layers{facts(1, 2, 0, 0), facts(1, 2, 0, 0)};
  StageTimes only_f{partition_explicit({1, 1}, 2), {}};
  only_f.seconds[{0, Op::Forward}] = 3;
  const EngineCalibration c = calibration_of({only_f}, layers);
  EXPECT_DOUBLE_EQ(c.forward, 3.0);
  EXPECT_DOUBLE_EQ(c.backward, 1.0);
  EXPECT_DOUBLE_EQ(c.input_grad, 1.0);  // the profile has no split: nothing to scale
  EXPECT_DOUBLE_EQ(c.weight_grad, 1.0);
  EXPECT_THROW(calibration_of({only_f}, {facts(1, 2, 0, 0)}), ConfigError);
}

struct LinearImpl : torch::nn::Module {
  explicit LinearImpl(int dim) { fc = register_module("fc", torch::nn::Linear(dim, dim)); }
  torch::nn::Linear fc{nullptr};
};

LayerSpec linear(const std::string& name, int dim) {
  return {name, [dim] {
            auto m = std::make_shared<LinearImpl>(dim);
            return tensor_layer(m, [m](const at::Tensor& x) { return torch::relu(m->fc(x)); },
                                std::vector<at::Generator>{});
          }};
}

TEST(Calibrate, TheEngineAloneTimesEveryActionOfBothSchedulesAndLeavesTheGeneratorAlone) {
  const std::vector<LayerSpec> model{linear("a", 32), linear("b", 32), linear("c", 32), linear("d", 32)};
  const LossFn loss = [](const Payload& out, const Payload& y) { return torch::mse_loss(out[0], y[0]); };
  // What the generator gives after drawing the data, when nothing else draws from it.
  torch::manual_seed(7);
  const at::Tensor x = torch::randn({16, 32}), y = torch::randn({16, 32});
  const at::Tensor expected = torch::rand({3});
  torch::manual_seed(7);
  ASSERT_TRUE(torch::equal(torch::randn({16, 32}), x));
  ASSERT_TRUE(torch::equal(torch::randn({16, 32}), y));
  const auto runs = time_stages_alone(model, loss, {x}, {y}, 4, 1);  // builds the model twice
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].cut.bounds, (std::vector<int>{0, 2, 4}));
  for (int stage : {0, 1}) {
    EXPECT_GT(runs[0].seconds.at({stage, Op::Forward}), 0) << stage;
    EXPECT_GT(runs[0].seconds.at({stage, Op::Backward}), 0) << stage;
    EXPECT_EQ(runs[0].seconds.count({stage, Op::Weight}), 0u) << "interleaved-1f1b does not split";
    EXPECT_GT(runs[1].seconds.at({stage, Op::Weight}), 0) << "zb-v splits every stage";
  }
  EXPECT_TRUE(torch::equal(torch::rand({3}), expected));
}

}  // namespace
}  // namespace tpipe
