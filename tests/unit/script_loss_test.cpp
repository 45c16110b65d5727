// Losses of the TorchScript front door, by name and scripted; where Debian's python3-torch is
// there, PyTorch computes them as the oracle.
#include "tpipe/script/script_data.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>

#include "script_fixtures.h"
#include "tpipe/error.h"

namespace tpipe {
namespace {

using namespace script_testing;

TEST(ScriptLoss, MatchesPyTorch) {
  if (!python_has_torch()) GTEST_SKIP() << kNoPython;
  TempDir dir("tpipe_sloss");
  std::ofstream(dir.path + "/l.py")
      << "import sys, torch\nimport torch.nn.functional as F\ntorch.manual_seed(0)\n"
         "lm, lt = torch.randn(2, 3, 7, dtype=torch.float64), torch.randint(7, (2, 3))\n"
         "sp, st = torch.randn(2, 4, 3, dtype=torch.float64), torch.randint(4, (2, 3))\n"
         "y, t = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)\n"
         "torch.save({'lm': lm, 'lt': lt, 'sp': sp, 'st': st, 'y': y, 't': t,\n"
         "  'ce_lm': F.cross_entropy(lm.reshape(-1, 7), lt.reshape(-1)), 'ce_sp': F.cross_entropy(sp, st),\n"
         "  'nll_lm': F.nll_loss(F.log_softmax(lm, -1).reshape(-1, 7), lt.reshape(-1)),\n"
         "  'mse': F.mse_loss(y, t)}, sys.argv[1])\n";
  const auto run = testing::sh("/usr/bin/python3 " + dir.path + "/l.py " + dir.path + "/l.pt");
  ASSERT_EQ(run.status, 0) << run.text;
  std::ifstream in(dir.path + "/l.pt", std::ios::binary);
  const auto d =
      torch::pickle_load({std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()}).toGenericDict();
  const auto at = [&](const char* k) { return d.at(k).toTensor(); };
  const auto ref = [&](const char* k) { return at(k).item<double>(); };
  EXPECT_NEAR(loss_by_name("cross_entropy")({at("lm")}, {at("lt")}).item<double>(), ref("ce_lm"), 1e-15);
  EXPECT_NEAR(loss_by_name("cross_entropy")({at("sp")}, {at("st")}).item<double>(), ref("ce_sp"), 1e-15);
  EXPECT_NEAR(loss_by_name("nll")({torch::log_softmax(at("lm"), -1)}, {at("lt")}).item<double>(), ref("nll_lm"), 1e-15);
  EXPECT_NEAR(loss_by_name("mse")({at("y")}, {at("t")}).item<double>(), ref("mse"), 1e-15);
}

// The loss by a loop over rows and classes, as one would write it on paper.
double cross_entropy_by_hand(const at::Tensor& logits2d, const at::Tensor& targets1d, bool log_probs = false) {
  double sum = 0;
  for (std::int64_t i = 0; i < logits2d.size(0); ++i) {
    const std::int64_t c = targets1d[i].item<std::int64_t>();
    double z = 0;
    for (std::int64_t j = 0; j < logits2d.size(1); ++j) z += std::exp(logits2d[i][j].item<double>());
    sum += log_probs ? -logits2d[i][c].item<double>() : std::log(z) - logits2d[i][c].item<double>();
  }
  return sum / static_cast<double>(logits2d.size(0));
}

TEST(ScriptLoss, CrossEntropyMatchesHandComputation) {
  const LossFn ce = loss_by_name("cross_entropy");
  // All-equal logits: log 4 for any target.
  EXPECT_DOUBLE_EQ(ce({torch::zeros({3, 4}, torch::kDouble)}, {torch::tensor({0, 3, 1})}).item<double>(),
                   std::log(4.0));
  const auto x = dbl({1, 2, 3, 1, 1, 1, -2, 0.5, 4}, {3, 3});
  const auto t = torch::tensor({2, 0, 1});
  EXPECT_NEAR(ce({x}, {t}).item<double>(), cross_entropy_by_hand(x, t), 1e-15);
  // int32 targets are classes too.
  EXPECT_NEAR(ce({x}, {t.to(torch::kInt)}).item<double>(), cross_entropy_by_hand(x, t), 1e-15);
  // Class probabilities (one-hot here) give the same.
  EXPECT_NEAR(ce({x}, {torch::one_hot(t, 3).to(torch::kDouble)}).item<double>(), cross_entropy_by_hand(x, t), 1e-15);
}

TEST(ScriptLoss, CrossEntropyOverTokensAndPositions) {
  const LossFn ce = loss_by_name("cross_entropy");
  torch::manual_seed(1);
  // A language model's [B,T,V] with targets [B,T]; T == V too, where [N,C,d] would also fit.
  for (std::int64_t v : {5, 3}) {
    const auto x = torch::randn({2, 3, v}, torch::kDouble);
    const auto t = torch::randint(v, {2, 3}, torch::kLong);
    EXPECT_NEAR(ce({x}, {t}).item<double>(), cross_entropy_by_hand(x.reshape({6, v}), t.reshape({6})), 1e-15);
  }
  // [N,C,d] with targets [N,d]: the classes are dim 1.
  const auto x = torch::randn({2, 4, 3}, torch::kDouble);
  const auto t = torch::randint(4, {2, 3}, torch::kLong);
  EXPECT_NEAR(ce({x}, {t}).item<double>(), cross_entropy_by_hand(x.permute({0, 2, 1}).reshape({6, 4}), t.reshape({6})),
              1e-15);
}

TEST(ScriptLoss, MseAndNllMatchHandComputation) {
  // Differences 0.5, 0, 0, 2: (0.25 + 4) / 4, exact in binary.
  EXPECT_EQ(loss_by_name("mse")({dbl({1, 2, 3, 4}, {2, 2})}, {dbl({1.5, 2, 3, 2}, {2, 2})}).item<double>(), 1.0625);
  // Float32 targets against float64 outputs are converted, not refused.
  EXPECT_EQ(loss_by_name("mse")({dbl({1, 2}, {2})}, {torch::tensor({0.f, 0.f})}).item<double>(), 2.5);
  // -(-0.5 - 1.25) / 2.
  const auto logp = dbl({-0.5, -9, -3, -1.25}, {2, 2});
  EXPECT_EQ(loss_by_name("nll")({logp}, {torch::tensor({0, 1})}).item<double>(), 0.875);
  const auto lm = torch::log_softmax(torch::randn({2, 3, 4}, torch::kDouble), -1);
  const auto t = torch::randint(4, {2, 3}, torch::kLong);
  EXPECT_NEAR(loss_by_name("nll")({lm}, {t}).item<double>(),
              cross_entropy_by_hand(lm.reshape({6, 4}), t.reshape({6}), true), 1e-15);
}

TEST(ScriptLoss, IsAMeanOverRowsSoMicroBatchesWeighByRows) {
  torch::manual_seed(2);
  const auto lm = torch::randn({4, 3, 5}, torch::kDouble);
  const auto t = torch::randint(5, {4, 3}, torch::kLong);
  const auto y = torch::randn({4, 2}, torch::kDouble);
  for (const auto& [name, out, tgt] :
       {std::make_tuple("cross_entropy", lm, t), std::make_tuple("nll", torch::log_softmax(lm, -1), t),
        std::make_tuple("mse", y, torch::zeros_like(y))}) {
    const LossFn f = loss_by_name(name);
    const double whole = f({out}, {tgt}).item<double>();
    const double parts = (3 * f({out.narrow(0, 0, 3)}, {tgt.narrow(0, 0, 3)}).item<double>() +
                          f({out.narrow(0, 3, 1)}, {tgt.narrow(0, 3, 1)}).item<double>()) /
                         4;
    EXPECT_NEAR(whole, parts, 1e-15) << name;
  }
}

TEST(ScriptLoss, ShapesThatDoNotFitAreShapeErrors) {
  const LossFn ce = loss_by_name("cross_entropy");
  const auto x = torch::zeros({4, 3}, torch::kDouble);
  const std::string forms =
      "expected outputs [N,C] or [N,C,d...] with targets [N] or [N,d...], or [B,T,V] with targets [B,T]";
  EXPECT_EQ(message<ShapeError>([&] { ce({x}, {torch::zeros({5}, torch::kLong)}); }),
            "cross_entropy: outputs [4,3] and targets [5] do not fit: " + forms);
  EXPECT_EQ(message<ShapeError>([&] { loss_by_name("nll")({torch::zeros({4})}, {torch::zeros({4}, torch::kLong)}); }),
            "nll: outputs [4] and targets [4] do not fit: " + forms);
  EXPECT_EQ(message<ShapeError>([&] {
              ce({x}, {torch::tensor({0, 1, 3, 2})});
            }),
            "cross_entropy: outputs [4,3] and targets [4] do not fit: class 3 is outside [0, 3)");
  EXPECT_EQ(message<ShapeError>([&] {
              ce({x}, {torch::tensor({0, -100, 1, 2})});
            }),
            "cross_entropy: outputs [4,3] and targets [4] do not fit: class -100 is outside [0, 3)");
  EXPECT_EQ(message<ShapeError>([&] { ce({x}, {torch::zeros({4}, torch::kDouble)}); }),
            "cross_entropy: outputs [4,3] and targets [4] do not fit: class targets must be integers (or "
            "probabilities shaped as the outputs), got Double");
  EXPECT_EQ(message<ShapeError>([&] {
              loss_by_name("mse")({torch::zeros({4, 1})}, {torch::zeros({4})});
            }),
            "mse: outputs [4,1] and targets [4] differ in shape; save the targets in the outputs' shape");
  EXPECT_EQ(message<ShapeError>([&] {
              loss_by_name("mse")({x, x}, {x});
            }),
            "mse takes one output and one target tensor, got 2 and 1; a model with several needs a TorchScript loss");
}

TEST(ScriptLoss, UnknownNameListsTheKnownOnes) {
  EXPECT_EQ(message<ConfigError>([] { loss_by_name("l1"); }),
            "unknown loss 'l1'; known losses: cross_entropy, mse, nll");
}

TEST(ScriptLoss, ScriptedInATorchScriptFile) {
  TempDir dir("tpipe_sloss");
  const std::string f = dir.path + "/loss.pt";
  torch::jit::Module m("LossModule");
  m.define("def loss(self, y, t):\n  return ((y - t) ** 2).mean()\n");
  m.define("def pair(self, y: Tuple[Tensor, Tensor], t: List[Tensor]):\n  return (y[0] * y[1] - t[0]).abs().sum()\n");
  m.define("def one(self, y):\n  return y.sum()\n");
  m.define("def rows(self, y, t):\n  return y - t\n");
  m.save(f);

  const auto y = dbl({1, 2, 3, 4}, {2, 2});
  const auto t = dbl({1.5, 2, 3, 2}, {2, 2});
  const at::Tensor l = loss_from_torchscript(f)({y}, {t});
  EXPECT_EQ(l.dim(), 0);
  EXPECT_EQ(l.item<double>(), 1.0625);
  EXPECT_EQ(loss_from_torchscript(f, "pair")({y, t}, {y}).item<double>(), 0.5 + 2 + 6 + 4);  // sum |y*t - y|

  // Gradients flow through the scripted function to the model's outputs.
  const auto out = y.clone().requires_grad_();
  loss_from_torchscript(f)({out}, {t}).backward();
  EXPECT_TRUE(torch::allclose(out.grad(), (y - t) / 2));

  const std::string w = "loss rows in " + f;
  EXPECT_EQ(message<ShapeError>([&] { loss_from_torchscript(f, "rows")({y}, {t}); }),
            w + " returned a tensor [2,2], expected a scalar tensor");
  EXPECT_EQ(message<ShapeError>([&] {
              loss_from_torchscript(f)({y, y}, {t});
            }),
            "loss loss in " + f + " takes one output tensor (typed Tensor), got 2");
  EXPECT_EQ(message<ShapeError>([&] { loss_from_torchscript(f, "pair")({y}, {t}); }),
            "loss pair in " + f + " takes a tuple of 2 output tensors, got 1");
  EXPECT_EQ(message<ConfigError>([&] { loss_from_torchscript(f, "one"); }),
            "loss one in " + f +
                " takes (y: Tensor); expected (outputs, targets), each a Tensor, a tuple of tensors or List[Tensor]");
  EXPECT_EQ(message<ConfigError>([&] { loss_from_torchscript(f, "l2"); }),
            "loss file " + f +
                " has no method 'l2' (it has: loss, pair, one, rows); define l2(self, outputs, targets) returning a "
                "scalar tensor");
  EXPECT_EQ(message<ConfigError>([&] { loss_from_torchscript(dir.path + "/none.pt"); }),
            "loss file " + dir.path + "/none.pt does not exist");
  save(c10::ivalue::Tuple::create({y, t}), dir.path + "/data.pt");
  const std::string e = message<ConfigError>([&] { loss_from_torchscript(dir.path + "/data.pt"); });
  EXPECT_EQ(e.rfind("loss file " + dir.path +
                        "/data.pt is not a TorchScript file (save one with "
                        "torch.jit.script(m).save): ",
                    0),
            0u)
      << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

}  // namespace
}  // namespace tpipe
