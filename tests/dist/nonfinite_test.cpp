// A step whose loss or gradient norm is NaN or infinite: every rank stops with the same message
// naming the step and the micro-batch, no weight changes, and the engine can go on; with
// skip_nonfinite the step is skipped and training continues. Ranks are threads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <map>
#include <mutex>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

constexpr int kBatch = 8, kMicro = 4;  // micro-batch 1 holds rows 2 and 3

// The targets of `step`; at step 2 one row of micro-batch 1 is NaN.
Payload targets(int step) {
  Payload t = fidelity_targets(step, kBatch);
  if (step == 2) t[0][3][0] = std::nan("");
  return t;
}

EngineOptions options(const std::string& schedule, bool skip) {
  EngineOptions o;
  o.schedule = schedule;
  o.microbatches = kMicro;
  o.input_chunking = fidelity_input_chunking();
  o.skip_nonfinite = skip;
  return o;
}

std::map<std::string, at::Tensor> weights(const PipelineEngine& e) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, p] : e.named_parameters()) out[name] = p.detach().clone();
  return out;
}

void expect_same(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

StepResult step(PipelineEngine& e, int s) {
  return e.train_batch(e.is_first_stage() ? fidelity_inputs(s, kBatch) : Payload{},
                       e.is_last_stage() ? targets(s) : Payload{});
}

TEST(NonFinite, ALossThatIsNanStopsEveryRankAtThatStepNamingTheMicroBatch) {
  for (const char* schedule : {"1f1b", "zb-v"}) {
    std::mutex mu;
    std::vector<std::string> messages(2);
    expect_ranks_ok(2, [&](Communicator& comm) {
      PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, options(schedule, false));
      step(e, 1);
      const auto before = weights(e);
      try {
        step(e, 2);
        ADD_FAILURE() << "step 2 must throw";
      } catch (const NonFiniteError& err) {
        std::lock_guard<std::mutex> lock(mu);
        messages[comm.rank()] = err.what();
      }
      expect_same(weights(e), before);  // the step changed nothing
      EXPECT_EQ(e.step(), 2);
      const StepResult r = step(e, 3);  // and the engine goes on
      EXPECT_TRUE(std::isfinite(r.loss));
      EXPECT_FALSE(r.skipped);
    });
    for (int r = 0; r < 2; ++r)
      EXPECT_EQ(messages[r], "[rank " + std::to_string(r) +
                                 "] step 2: the loss is nan (micro-batch 1 of replica 0 was the first non-finite one)")
          << schedule;
  }
}

TEST(NonFinite, SkipLeavesTheWeightsAndTrainsOn) {
  expect_ranks_ok(4, [&](Communicator& comm) {
    EngineOptions o = options("zb-h1", true);
    o.dp = 2;
    PipelineEngine e(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
    EXPECT_FALSE(step(e, 1).skipped);
    const auto before = weights(e);
    const StepResult r = step(e, 2);
    EXPECT_TRUE(r.skipped);
    EXPECT_TRUE(std::isnan(r.loss));
    expect_same(weights(e), before);
    for (const auto& [name, p] : e.named_parameters()) EXPECT_FALSE(p.grad().defined()) << name;
    const StepResult next = step(e, 3);
    EXPECT_FALSE(next.skipped);
    EXPECT_TRUE(std::isfinite(next.loss));
    EXPECT_EQ(e.step(), 3);
  });
}

// The identity on x whose backward gives w an infinite gradient: a finite loss, inf gradients.
struct InfiniteGrad : torch::autograd::Function<InfiniteGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->saved_data["numel"] = w.numel();
    return x.clone();
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list g) {
    const auto n = ctx->saved_data["numel"].toInt();
    return {g[0], torch::full({n}, std::numeric_limits<double>::infinity(), torch::kDouble)};
  }
};

TEST(NonFinite, AnInfiniteGradientNamesTheStagesWhereItIs) {
  std::vector<std::string> messages(2);
  std::mutex mu;
  expect_ranks_ok(2, [&](Communicator& comm) {
    auto layers = fidelity_layers();
    layers.insert(layers.begin(), LayerSpec{"overflow", [] {
                    auto m = std::make_shared<torch::nn::Module>();
                    auto w = m->register_parameter("w", torch::ones({1}, torch::kDouble));
                    return module_layer(m, [w](const Payload& in) {
                      Payload out = in;
                      out[0] = InfiniteGrad::apply(in[0], w);
                      return out;
                    });
                  }});
    PipelineEngine e(layers, fidelity_loss(), fidelity_optimizer(), comm, options("1f1b", false));
    try {
      step(e, 1);
      ADD_FAILURE() << "step 1 must throw";
    } catch (const NonFiniteError& err) {
      std::lock_guard<std::mutex> lock(mu);
      messages[comm.rank()] = err.what();
    }
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(messages[r], "[rank " + std::to_string(r) +
                               "] step 1: the gradient norm is inf (non-finite gradients on stage 0 of replica 0)");
}

}  // namespace
}  // namespace tpipe::testing
