// Checkpoints through the engine, ranks as threads:
// - resume is bitwise: N steps straight == k steps, save, new communicator and engine, load,
//   N-k steps (every loss, every final weight and optimizer moment), across schedules, pp, dp,
//   ties, float32/float64, SGD-momentum/Adam/AdamW, clipping;
// - reshard: saved at one (pp, dp), continued at another, equals continuing where it was saved;
// - a bad checkpoint is one exact error on every rank, and the model is untouched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <cmath>
#include <fstream>
#include <mutex>

#include "checkpoints.h"
#include "fidelity_model.h"
#include "ranks.h"
#include "temp_dir.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/checkpoint/tensor_file.h"
#include "tpipe/models/gpt.h"

namespace tpipe::testing {
namespace {

namespace fs = std::filesystem;


// The tiny GPT of the fidelity tests in a chosen dtype and optimizer.
ModelDef gpt_model(at::ScalarType dtype, const std::string& optimizer, std::optional<double> clip,
                   double dropout = 0) {
  ModelDef m = gpt_test_model();
  GptConfig c;
  c.vocab = 11, c.dim = 8, c.heads = 2, c.layers = 2, c.seq_len = 6, c.dtype = dtype, c.seed = 3;
  c.dropout = dropout;
  m.layers = [c] { return gpt_layers(c); };
  m.optimizer = [optimizer](std::vector<at::Tensor> p) -> std::unique_ptr<torch::optim::Optimizer> {
    if (optimizer == "adam") return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(1e-2));
    return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  };
  m.clip = clip;
  return m;
}

EngineOptions layout(const std::string& schedule, int pp, int dp, int m = 4) {
  EngineOptions o;
  o.schedule = schedule;
  o.pp = pp;
  o.dp = dp;
  o.microbatches = m;
  return o;
}

std::unique_ptr<PipelineEngine> make_engine(const ModelDef& model, Communicator& comm, EngineOptions o) {
  if (!model.input_chunking.empty()) o.input_chunking = model.input_chunking;
  o.clip_grad_norm = model.clip;
  return std::make_unique<PipelineEngine>(model.layers(), model.loss, model.optimizer, comm, o);
}

// Trains steps [from, to) of the run; returns the losses.
std::vector<double> train(PipelineEngine& e, const ModelDef& model, int batch, int from, int to) {
  std::vector<double> losses;
  for (int step = from; step < to; ++step)
    losses.push_back(e.train_batch(e.is_first_stage() ? model.inputs(step, batch) : Payload{},
                                   e.is_last_stage() ? model.targets(step, batch) : Payload{})
                         .loss);
  return losses;
}


struct ResumeCase {
  std::string name, model, schedule;
  int pp, dp;
};

void PrintTo(const ResumeCase& c, std::ostream* os) { *os << c.name; }

ModelDef model_named(const std::string& name) {
  if (name == "tied_toy_f64_sgd") {
    ModelDef m = tied_toy_model();
    m.clip = 0.5;
    return m;
  }
  if (name == "gpt_f32_adamw_clip") return gpt_model(at::kFloat, "adamw", 0.3);
  if (name == "gpt_f64_adamw") return gpt_model(at::kDouble, "adamw", std::nullopt);
  if (name == "gpt_f64_adamw_dropout") return gpt_model(at::kDouble, "adamw", std::nullopt, 0.2);
  return gpt_model(at::kDouble, "adam", 0.3);  // gpt_f64_adam_clip
}

class Resume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resume, IsBitwiseEqualToTrainingStraightThrough) {
  const auto& c = GetParam();
  const ModelDef model = model_named(c.model);
  const int world = c.pp * c.dp, batch = 8, n = 6, k = 3;
  const TempDir straight, split;
  std::vector<double> want, got_first, got_second;
  std::mutex mu;
  auto keep = [&](std::vector<double>& to, int rank, std::vector<double> v) {
    std::lock_guard<std::mutex> lock(mu);
    if (rank == 0) to = std::move(v);
  };
  expect_ranks_ok(world, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout(c.schedule, c.pp, c.dp));
    keep(want, comm.rank(), train(*e, model, batch, 0, n));
    e->save(straight.path);
  });
  expect_ranks_ok(world, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout(c.schedule, c.pp, c.dp));
    keep(got_first, comm.rank(), train(*e, model, batch, 0, k));
    const auto info = e->save(split.path, R"({"note": "half way"})");
    EXPECT_EQ(info.path, split.path + "/step-000003");
  });
  expect_ranks_ok(world, [&](Communicator& comm) {  // a new communicator and engine
    auto e = make_engine(model, comm, layout(c.schedule, c.pp, c.dp));
    const auto info = e->load(split.path);
    EXPECT_EQ(info.step, k);
    EXPECT_EQ(e->step(), k);
    EXPECT_EQ(nlohmann::json::parse(info.extra)["note"], "half way");
    EXPECT_TRUE(info.rng_restored);
    keep(got_second, comm.rank(), train(*e, model, batch, k, n));
    e->save(split.path);
  });
  ASSERT_EQ(want.size(), static_cast<std::size_t>(n));
  got_first.insert(got_first.end(), got_second.begin(), got_second.end());
  for (int s = 0; s < n; ++s) EXPECT_EQ(got_first[s], want[s]) << "loss of step " << s;  // bitwise

  const auto a = checkpoint_tensors(straight.path + "/step-000006"), b = checkpoint_tensors(split.path + "/step-000006");
  ASSERT_EQ(a.size(), b.size());
  int moments = 0;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
    moments += name.rfind("optimizer/", 0) == 0;
  }
  EXPECT_GT(moments, 0) << "the optimizer state was saved and compared";
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoint, Resume,
    ::testing::Values(ResumeCase{"tied_toy_f64_sgd_1f1b_pp2_dp1", "tied_toy_f64_sgd", "1f1b", 2, 1},
                      ResumeCase{"tied_toy_f64_sgd_gpipe_pp3_dp2", "tied_toy_f64_sgd", "gpipe", 3, 2},
                      ResumeCase{"gpt_f32_adamw_clip_1f1b_pp3_dp1", "gpt_f32_adamw_clip", "1f1b", 3, 1},
                      ResumeCase{"gpt_f32_adamw_clip_gpipe_pp2_dp2", "gpt_f32_adamw_clip", "gpipe", 2, 2},
                      ResumeCase{"gpt_f64_adamw_1f1b_pp2_dp2", "gpt_f64_adamw", "1f1b", 2, 2},
                      ResumeCase{"gpt_f64_adam_clip_gpipe_pp3_dp1", "gpt_f64_adam_clip", "gpipe", 3, 1},
                      // The dropout masks come from the layers' own generators, saved with them.
                      ResumeCase{"gpt_f64_adamw_dropout_zb_v_pp2_dp1", "gpt_f64_adamw_dropout", "zb-v", 2, 1},
                      ResumeCase{"gpt_f64_adamw_dropout_1f1b_pp2_dp2", "gpt_f64_adamw_dropout", "1f1b", 2, 2}),
    [](const auto& info) { return info.param.name; });

// Saved at one layout, continued at another: equals continuing at the layout it was saved at
// (the global batch is the same; only the order of the sums differs).
struct Layout2 {
  int pp, dp;
};

double reshard_error(Layout2 from, Layout2 to) {
  const ModelDef model = gpt_model(at::kDouble, "adamw", 0.3);
  const int batch = 8, n = 5, k = 2;
  const TempDir saved, straight, resharded;
  expect_ranks_ok(from.pp * from.dp, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout("1f1b", from.pp, from.dp));
    train(*e, model, batch, 0, k);
    e->save(saved.path);
    train(*e, model, batch, k, n);
    e->save(straight.path);
  });
  expect_ranks_ok(to.pp * to.dp, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout("gpipe", to.pp, to.dp));
    const auto info = e->load(saved.path);
    EXPECT_EQ(info.pp, from.pp);
    EXPECT_EQ(info.dp, from.dp);
    EXPECT_EQ(info.rng_restored, from.pp == to.pp && from.dp == to.dp);
    train(*e, model, batch, k, n);
    e->save(resharded.path);
  });
  const auto a = checkpoint_tensors(straight.path + "/step-000005"), b = checkpoint_tensors(resharded.path + "/step-000005");
  EXPECT_EQ(a.size(), b.size());
  double err = 0;
  for (const auto& [name, t] : a) {
    if (!b.count(name)) {
      ADD_FAILURE() << name << " missing after the reshard";
      continue;
    }
    if (t.scalar_type() == at::kLong) {
      EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
      continue;
    }
    const double scale = std::max(t.abs().max().item<double>(), 1e-300);
    err = std::max(err, (t - b.at(name)).abs().max().item<double>() / scale);
  }
  return err;
}

TEST(Reshard, Pp2Dp2ToPp3Dp1) { EXPECT_LE(reshard_error({2, 2}, {3, 1}), 1e-10); }
TEST(Reshard, Pp2Dp2ToOneProcess) { EXPECT_LE(reshard_error({2, 2}, {1, 1}), 1e-10); }
TEST(Reshard, Pp3Dp1ToPp2Dp2) { EXPECT_LE(reshard_error({3, 1}, {2, 2}), 1e-10); }
TEST(Reshard, OneProcessToPp2Dp2) { EXPECT_LE(reshard_error({1, 1}, {2, 2}), 1e-10); }

// The learning rate a scheduler set comes back with the checkpoint; a state saved without
// AMSGrad's maximum loads into an optimizer that uses it (as zeros, as LibTorch starts it).
TEST(CheckpointState, LearningRatesAndAMSGradComeBack) {
  const TempDir root;
  ModelDef model = gpt_model(at::kDouble, "adam", std::nullopt);
  expect_ranks_ok(2, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout("1f1b", 2, 1));
    train(*e, model, 8, 0, 2);
    for (auto& g : e->optimizer()->param_groups()) g.options().set_lr(0.0042);
    e->save(root.path);
  });
  model.optimizer = [](std::vector<at::Tensor> p) -> std::unique_ptr<torch::optim::Optimizer> {
    return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(1e-2).amsgrad(true));
  };
  expect_ranks_ok(2, [&](Communicator& comm) {
    auto e = make_engine(model, comm, layout("1f1b", 2, 1));
    e->load(root.path);
    for (auto& g : e->optimizer()->param_groups()) EXPECT_EQ(g.options().get_lr(), 0.0042);
    const auto losses = train(*e, model, 8, 2, 3);
    EXPECT_TRUE(std::isfinite(losses.at(0)));
  });
}

// ---- bad checkpoints ---------------------------------------------------------------------

class BadCheckpoint : public ::testing::Test {
 protected:
  // A good checkpoint of the tied toy model (pp 2) after two steps, then damage done to it.
  void SetUp() override {
    expect_ranks_ok(2, [&](Communicator& comm) {
      auto e = make_engine(model, comm, layout("1f1b", 2, 1));
      train(*e, model, 8, 0, 2);
      e->save(root.path);
    });
    dir = root.path + "/step-000002";
  }

  // Loads `path` into a fresh engine of `other` (default: the same model) on 2 ranks; checks
  // that every rank fails with exactly `want` and that no weight changed.
  void expect_load_fails(const std::string& path, const std::string& want, const ModelDef* other = nullptr) {
    const ModelDef& m = other ? *other : model;
    const auto errors = run_ranks(2, [&](Communicator& comm) {
      auto e = make_engine(m, comm, layout("1f1b", 2, 1));
      std::map<std::string, at::Tensor> before;
      for (auto& [n, t] : e->named_parameters()) before[n] = t.detach().clone();
      try {
        e->load(path);
      } catch (...) {
        for (auto& [n, t] : e->named_parameters()) EXPECT_TRUE(torch::equal(t, before.at(n))) << n << " changed";
        EXPECT_EQ(e->step(), 0);
        train(*e, m, 8, 0, 1);  // still usable
        throw;
      }
    });
    EXPECT_EQ(errors[0], want);
    EXPECT_EQ(errors[1], want);
  }

  void rewrite(const std::string& file, const std::function<void(std::string&)>& change) {
    std::ifstream in(dir + "/" + file, std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    change(s);
    std::ofstream(dir + "/" + file, std::ios::binary | std::ios::trunc) << s;
  }

  ModelDef model = tied_toy_model();
  TempDir root;
  std::string dir;
};

TEST_F(BadCheckpoint, TruncatedLayerFile) {
  std::int64_t bytes = 0;
  rewrite("layers/block3.pt", [&](std::string& s) {
    bytes = static_cast<std::int64_t>(s.size());
    s.resize(s.size() / 2);
  });
  expect_load_fails(root.path, "[rank 1 | stage 1 | load] checkpoint file " + dir + "/layers/block3.pt has " +
                                   std::to_string(bytes / 2) + " bytes, the manifest says " + std::to_string(bytes) +
                                   ": it is truncated or was replaced");
}

TEST_F(BadCheckpoint, FlippedByteInOptimizerState) {
  rewrite("optimizer/block0.pt", [](std::string& s) { s[s.size() / 2] ^= 0x10; });
  expect_load_fails(dir, "[rank 0 | stage 0 | load] checkpoint file " + dir +
                             "/optimizer/block0.pt is damaged: its SHA-256 differs from the manifest's");
}

TEST_F(BadCheckpoint, MissingLayerFile) {
  fs::remove(dir + "/layers/a.pt");
  expect_load_fails(dir, "[rank 0 | stage 0 | load] checkpoint " + dir + " is missing layers/a.pt");
}

TEST_F(BadCheckpoint, ManifestOfAnotherModel) {
  const ModelDef blocks = fidelity_model();  // block0 .. block7, no ties
  expect_load_fails(dir,
                    "[rank 0 | stage 0 | load] checkpoint " + dir +
                        " has no layer 'block4', which the model has: it was saved from another model",
                    &blocks);
}

TEST_F(BadCheckpoint, SameNamesOtherShapes) {
  TempDir gpt_root;
  GptConfig small;
  small.vocab = 11, small.dim = 8, small.heads = 2, small.layers = 2, small.seq_len = 6, small.dtype = at::kDouble;
  GptConfig wide = small;
  wide.dim = 16;
  auto def = [](GptConfig c) {
    ModelDef m = gpt_test_model();
    m.layers = [c] { return gpt_layers(c); };
    return m;
  };
  const ModelDef a = def(small), b = def(wide);
  expect_ranks_ok(2, [&](Communicator& comm) { make_engine(a, comm, layout("1f1b", 2, 1))->save(gpt_root.path); });
  const std::string d = gpt_root.path + "/step-000000";
  const auto errors = run_ranks(2, [&](Communicator& comm) { make_engine(b, comm, layout("1f1b", 2, 1))->load(d); });
  const std::string want = "[rank 0 | stage 0 | load] checkpoint " + d +
                           ": layer 'wte' parameter 'weight' is Double [11,8] there, Double [11,16] in the model";
  EXPECT_EQ(errors[0], want);
  EXPECT_EQ(errors[1], want);
}

TEST_F(BadCheckpoint, NewerFormatVersion) {
  rewrite("manifest.json", [](std::string& s) {
    auto j = nlohmann::json::parse(s);
    j["version"] = 2;
    s = j.dump();
  });
  expect_load_fails(dir, "[rank 0 | stage 0 | load] " + dir +
                             "/manifest.json was written by a newer tpipe: checkpoint format version 2, this tpipe "
                             "reads version 1 and older");
}

TEST_F(BadCheckpoint, EmptyDirectory) {
  const TempDir empty;
  expect_load_fails(empty.path, "[rank 0 | stage 0 | load] no checkpoint in " + empty.path +
                                    ": it has neither a manifest.json nor a complete step-NNNNNN checkpoint directory");
}

TEST_F(BadCheckpoint, ALayerTheModelDoesNotHave) {
  rewrite("manifest.json", [](std::string& s) {
    auto j = nlohmann::json::parse(s);
    j["layers"].push_back({{"name", "extra"}, {"tie", "a"}});
    s = j.dump();
  });
  expect_load_fails(dir, "[rank 0 | stage 0 | load] checkpoint " + dir +
                             " has layer 'extra', which the model does not have: it was saved from another model");
}

// The layer files are what Python's torch.load reads: {name: tensor}, in the model's values.
TEST_F(BadCheckpoint, LayerFilesHoldTheTrainedWeightsByName) {
  const auto m = checkpoint::read_manifest(dir);
  EXPECT_EQ(m.step, 2);
  EXPECT_EQ(m.optimizer, "SGD");
  EXPECT_EQ(m.layout.partition, (std::vector<int>{4, 4}));
  ASSERT_EQ(m.layers.size(), 8u);
  EXPECT_EQ(m.layers[0].name, "b0");
  EXPECT_EQ(m.layers[0].tie, "b");
  EXPECT_EQ(m.modules.at("b").file, "layers/b.pt");
  const auto t = checkpoint::read_tensors(dir, "layers/block0.pt", m.files.at("layers/block0.pt"));
  ASSERT_EQ(t.size(), 3u);  // lin.weight, lin.bias, emb.weight
  EXPECT_EQ(t[0].first, "lin.weight");
  EXPECT_EQ(t[0].second.sizes(), (std::vector<int64_t>{6, 6}));
  const auto s = checkpoint::read_tensors(dir, "optimizer/block0.pt", m.files.at("optimizer/block0.pt"));
  EXPECT_EQ(s[0].first, "lin.weight.momentum_buffer");
}

}  // namespace
}  // namespace tpipe::testing
