// A TorchScript model, pipelined: the layers of a scripted file (layers_from_torchscript) trained
// by the engine under several schedules equal the scripted module trained whole in one process
// (float64, relative error <= 1e-10): losses, and the weights after the last step, which
// export_torchscript writes back into a file that loads and runs.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <mutex>

#include "ranks.h"
#include "temp_dir.h"
#include "tpipe/engine.h"
#include "tpipe/script/script_data.h"
#include "tpipe/script/torchscript_layers.h"

namespace tpipe::testing {
namespace {

using torch::jit::Module;

constexpr int kSteps = 3, kRows = 10;
constexpr double kLr = 0.1, kTolerance = 1e-10;

// Five children x <- tanh(x W_i) of widths 3 -> 6 -> 6 -> 6 -> 6 -> 2, applied in order.
std::string save_model(const std::string& dir) {
  auto gen = at::detail::createCPUGenerator(7);
  Module net("Net");
  std::string forward = "x";
  const int widths[] = {3, 6, 6, 6, 6, 2};
  for (int i = 0; i < 5; ++i) {
    Module child("Map" + std::to_string(i));
    child.register_parameter(
        "weight", (torch::randn({widths[i], widths[i + 1]}, gen, torch::kDouble) * 0.5).requires_grad_(), false);
    child.define("def forward(self, x):\n    return torch.tanh(x.mm(self.weight))\n");
    net.register_module("m" + std::to_string(i), child);
    forward = "self.m" + std::to_string(i) + ".forward(" + forward + ")";
  }
  net.define("def forward(self, x):\n    return " + forward + "\n");
  const std::string path = dir + "/net.pt";
  net.save(path);
  return path;
}

at::Tensor inputs(int step) {
  return torch::randn({kRows, 3}, at::detail::createCPUGenerator(100 + step), torch::kDouble);
}
at::Tensor targets(int step) {
  return torch::randn({kRows, 2}, at::detail::createCPUGenerator(200 + step), torch::kDouble);
}

struct Result {
  std::vector<double> losses;
  std::map<std::string, at::Tensor> weights;  // "m0.weight", ...
};

// The whole scripted module, one process, plain SGD on the whole batch.
Result train_whole(const std::string& path) {
  Module m = torch::jit::load(path);
  Result r;
  for (int step = 0; step < kSteps; ++step) {
    const at::Tensor y = m.forward({inputs(step)}).toTensor();
    const at::Tensor loss = at::mse_loss(y, targets(step));
    for (const auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
    loss.backward();
    r.losses.push_back(loss.item<double>());
    torch::NoGradGuard no_grad;
    for (const auto& p : m.parameters()) p.sub_(p.grad() * kLr);
  }
  for (const auto& p : m.named_parameters()) r.weights[p.name] = p.value.detach().clone();
  return r;
}

TEST(TorchScriptPipeline, EqualsTheScriptedModuleTrainedWhole) {
  const TempDir dir;
  const std::string path = save_model(dir.path);
  const Result whole = train_whole(path);
  for (const auto& [schedule, pp, m] : {std::tuple{"gpipe", 2, 3}, std::tuple{"1f1b", 3, 4},
                                        std::tuple{"zb-v", 2, 3}, std::tuple{"interleaved-1f1b", 2, 4}}) {
    std::mutex mu;
    std::map<std::string, at::Tensor> weights;
    std::vector<double> losses;
    expect_ranks_ok(pp, [&, schedule = std::string(schedule), pp = pp, m = m](Communicator& comm) {
      EngineOptions o;
      o.schedule = schedule;
      o.microbatches = m;
      o.pp = pp;
      PipelineEngine e(layers_from_torchscript(path), loss_by_name("mse"),
                       [](std::vector<at::Tensor> p) { return std::make_unique<torch::optim::SGD>(p, kLr); }, comm,
                       o);
      std::vector<double> mine;
      for (int step = 0; step < kSteps; ++step) mine.push_back(e.train_batch({inputs(step)}, {targets(step)}).loss);
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& [name, t] : e.named_parameters()) weights[name] = t.detach().clone();
      if (comm.rank() == 0) losses = mine;
    });
    SCOPED_TRACE(std::string(schedule) + " p=" + std::to_string(pp) + " m=" + std::to_string(m));
    ASSERT_EQ(losses.size(), whole.losses.size());
    for (int s = 0; s < kSteps; ++s)
      EXPECT_NEAR(losses[s], whole.losses[s], kTolerance * whole.losses[s]) << "step " << s;
    ASSERT_EQ(weights.size(), whole.weights.size());
    for (const auto& [name, w] : whole.weights) {
      ASSERT_TRUE(weights.count(name)) << name;
      EXPECT_LE((weights[name] - w).abs().max().item<double>(), kTolerance * w.abs().max().item<double>()) << name;
    }
    // Written back into the file's module, the pipeline's weights give the whole module's outputs.
    export_torchscript(path, weights, dir.path + "/trained.pt");
    Module trained = torch::jit::load(dir.path + "/trained.pt");
    Module reference = torch::jit::load(path);
    {
      torch::NoGradGuard no_grad;
      for (const auto& p : reference.named_parameters()) p.value.copy_(whole.weights.at(p.name));
    }
    const at::Tensor x = inputs(9);
    EXPECT_LE((trained.forward({x}).toTensor() - reference.forward({x}).toTensor()).abs().max().item<double>(),
              1e-10);
  }
}

}  // namespace
}  // namespace tpipe::testing
