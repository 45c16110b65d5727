// The GPT model of tpipe/models/gpt.h in one process, without the engine: layout and parameter
// names, the tie, causality, gradients of the tied weight, determinism, errors, and that it learns.
#include "tpipe/models/gpt.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "tpipe/error.h"

namespace tpipe {
namespace {

// The model built the way a single stage holding every layer builds it. With share_ties, every
// position of a tie uses one module (named by its key, like the engine names it); without, each
// position gets its own copy from the factory (named by the layer).
struct Model {
  std::vector<LayerPtr> layers;
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<std::shared_ptr<torch::nn::Module>> tied;  // one per tied position, in layer order

  at::Tensor forward(const at::Tensor& ids) {
    Payload p{ids};
    for (auto& l : layers) p = l->forward(p);
    return p.at(0);
  }
  at::Tensor param(const std::string& name) const {
    for (const auto& [n, t] : params)
      if (n == name) return t;
    throw std::runtime_error("no parameter " + name);
  }
};

Model build(const std::vector<LayerSpec>& specs, bool share_ties = true) {
  Model m;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> by_key;
  for (const auto& spec : specs) {
    if (!spec.tied) {
      m.layers.push_back(spec.factory());
      for (auto& [n, t] : m.layers.back()->named_parameters()) m.params.emplace_back(spec.name + "." + n, t);
      continue;
    }
    auto& module = by_key[spec.tied->key];
    const bool fresh = !module || !share_ties;
    if (fresh) module = spec.tied->factory();
    m.layers.push_back(tied_position(*spec.tied, module));
    m.tied.push_back(module);
    if (fresh)
      for (auto& [n, t] : m.layers.back()->named_parameters())
        m.params.emplace_back((share_ties ? spec.tied->key : spec.name) + "." + n, t);
  }
  return m;
}

GptConfig small(at::ScalarType dtype = at::kDouble) {
  GptConfig c;
  c.vocab = 11;
  c.dim = 16;
  c.heads = 4;
  c.layers = 2;
  c.seq_len = 8;
  c.dtype = dtype;
  c.seed = 5;
  return c;
}

at::Tensor tokens(int64_t B, int64_t T, int64_t vocab, uint64_t seed = 3) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(0, vocab, {B, T}, gen, torch::kLong);
}

template <class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(GptModel, LayoutAndParameterNames) {
  GptConfig c = small();
  c.layers = 1;
  const auto specs = gpt_layers(c);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"embed", "pos", "block0", "ln_f", "lm_head"}));
  ASSERT_TRUE(specs.front().tied && specs.back().tied);
  EXPECT_EQ(specs.front().tied->key, "wte");
  EXPECT_EQ(specs.back().tied->key, "wte");
  for (std::size_t i = 1; i + 1 < specs.size(); ++i) EXPECT_FALSE(specs[i].tied) << specs[i].name;

  std::vector<std::string> params;
  for (const auto& [n, t] : build(specs).params) params.push_back(n);
  EXPECT_EQ(params, (std::vector<std::string>{
                        "wte.weight", "pos.weight", "block0.ln1.weight", "block0.ln1.bias",
                        "block0.attn.qkv.weight", "block0.attn.qkv.bias", "block0.attn.proj.weight",
                        "block0.attn.proj.bias", "block0.ln2.weight", "block0.ln2.bias", "block0.mlp.fc.weight",
                        "block0.mlp.fc.bias", "block0.mlp.proj.weight", "block0.mlp.proj.bias", "ln_f.weight",
                        "ln_f.bias"}));
}

TEST(GptModel, LogitsShapeAndOneSharedWeight) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const GptConfig c = small(dtype);
    Model m = build(gpt_layers(c));
    const at::Tensor logits = m.forward(tokens(3, 7, c.vocab));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 7, c.vocab}));
    EXPECT_EQ(logits.scalar_type(), dtype);
    for (const auto& [n, t] : m.params) EXPECT_EQ(t.scalar_type(), dtype) << n;

    ASSERT_EQ(m.tied.size(), 2u);
    const auto embed = m.layers.front()->named_parameters(), head = m.layers.back()->named_parameters();
    ASSERT_EQ(embed.size(), 1u);
    ASSERT_EQ(head.size(), 1u);
    EXPECT_EQ(embed[0].second.data_ptr(), head[0].second.data_ptr());
    EXPECT_EQ(embed[0].second.sizes(), (std::vector<int64_t>{c.vocab, c.dim}));
  }
}

TEST(GptModel, IsCausal) {
  const GptConfig c = small();
  Model m = build(gpt_layers(c));
  torch::NoGradGuard no_grad;
  const at::Tensor ids = tokens(2, c.seq_len, c.vocab);
  const at::Tensor base = m.forward(ids);
  for (int64_t t : {0, 3, c.seq_len - 1}) {
    at::Tensor changed = ids.clone();
    changed.select(1, t).add_(1).remainder_(c.vocab);
    const at::Tensor out = m.forward(changed);
    EXPECT_TRUE(torch::equal(out.narrow(1, 0, t), base.narrow(1, 0, t))) << "a logit before token " << t << " moved";
    for (int64_t b = 0; b < 2; ++b)
      EXPECT_FALSE(torch::equal(out[b][t], base[b][t])) << "position " << t << " ignores its own token";
  }
}

TEST(GptModel, TiedGradientIsTheSumOfBothPositions) {
  const GptConfig c = small();
  Model shared = build(gpt_layers(c), true);
  Model split = build(gpt_layers(c), false);
  ASSERT_EQ(split.tied.size(), 2u);
  const at::Tensor embed_w = split.param("embed.weight"), head_w = split.param("lm_head.weight");
  ASSERT_NE(embed_w.data_ptr(), head_w.data_ptr());
  ASSERT_TRUE(torch::equal(embed_w, head_w)) << "the tied factory must build identical copies";
  ASSERT_TRUE(torch::equal(embed_w, shared.param("wte.weight")));

  const at::Tensor ids = tokens(3, c.seq_len, c.vocab, 8), tgt = tokens(3, c.seq_len, c.vocab, 9);
  for (Model* m : {&shared, &split}) gpt_loss()({m->forward(ids)}, {tgt}).backward();

  const at::Tensor g_embed = embed_w.grad(), g_head = head_w.grad();
  ASSERT_TRUE(g_embed.defined() && g_head.defined());
  EXPECT_GT(g_embed.abs().max().item<double>(), 0);
  EXPECT_GT(g_head.abs().max().item<double>(), 0);
  EXPECT_LE((shared.param("wte.weight").grad() - (g_embed + g_head)).abs().max().item<double>(), 1e-12);
  // The other parameters see the same function, so the same gradients.
  for (const auto& [n, t] : shared.params) {
    if (n == "wte.weight") continue;
    EXPECT_LE((t.grad() - split.param(n).grad()).abs().max().item<double>(), 1e-12) << n;
  }
}

TEST(GptModel, WeightsDependOnSeedAndNameNotOnGlobalRng) {
  GptConfig c = small(at::kFloat);
  torch::manual_seed(1);
  Model a = build(gpt_layers(c));
  torch::manual_seed(2);
  Model b = build(gpt_layers(c));
  ASSERT_EQ(a.params.size(), b.params.size());
  for (std::size_t i = 0; i < a.params.size(); ++i)
    EXPECT_TRUE(torch::equal(a.params[i].second, b.params[i].second)) << a.params[i].first;

  c.seed = 6;
  Model other = build(gpt_layers(c));
  for (const char* n : {"wte.weight", "pos.weight", "block0.attn.qkv.weight", "block1.mlp.proj.weight"})
    EXPECT_FALSE(torch::equal(a.param(n), other.param(n))) << n;
  // Blocks are seeded by name, so they are not copies of one another.
  EXPECT_FALSE(torch::equal(a.param("block0.attn.qkv.weight"), a.param("block1.attn.qkv.weight")));
  // GPT-2 initialisation: biases zero, LayerNorm the identity, weights small.
  EXPECT_EQ(a.param("block0.attn.qkv.bias").abs().max().item<double>(), 0);
  EXPECT_TRUE(torch::equal(a.param("ln_f.weight"), torch::ones({c.dim})));
  const double sd = a.param("block0.mlp.fc.weight").std().item<double>();
  EXPECT_NEAR(sd, 0.02, 0.003);
}

TEST(GptModel, ConfigErrorsNameTheOption) {
  auto error = [](auto edit) {
    GptConfig c;
    edit(c);
    return message_of([&] { check_config(c); });
  };
  EXPECT_EQ(error([](GptConfig& c) { c.dim = 65; }), "--dim 65 is not divisible by --heads 4");
  EXPECT_EQ(error([](GptConfig& c) { c.vocab = 0; }), "--vocab must be at least 1, got 0");
  EXPECT_EQ(error([](GptConfig& c) { c.dim = -2; }), "--dim must be at least 1, got -2");
  EXPECT_EQ(error([](GptConfig& c) { c.heads = 0; }), "--heads must be at least 1, got 0");
  EXPECT_EQ(error([](GptConfig& c) { c.layers = 0; }), "--layers must be at least 1, got 0");
  EXPECT_EQ(error([](GptConfig& c) { c.seq_len = 0; }), "--seq-len must be at least 1, got 0");
  EXPECT_EQ(error([](GptConfig& c) { c.dtype = at::kLong; }), "--dtype must be a floating-point type, got Long");
  EXPECT_EQ(error([](GptConfig&) {}), "(no exception)");

  GptConfig bad;
  bad.heads = 3;
  EXPECT_THROW(gpt_layers(bad), ConfigError);
}

TEST(GptModel, ShapeErrorsSayWhatWasExpected) {
  const GptConfig c = small();
  Model m = build(gpt_layers(c));
  EXPECT_THROW(m.forward(tokens(2, c.seq_len + 1, c.vocab)), ShapeError);
  EXPECT_EQ(message_of([&] { m.forward(tokens(2, c.seq_len + 1, c.vocab)); }),
            "GPT pos: a sequence of 9 tokens is longer than --seq-len 8");
  EXPECT_EQ(message_of([&] { m.forward(torch::full({1, 4}, 11, torch::kLong)); }),
            "GPT embed: token id 11 is outside the vocabulary [0,11) (--vocab 11)");
  EXPECT_EQ(message_of([&] { m.forward(torch::zeros({4}, torch::kLong)); }),
            "GPT embed expects token ids [B,T] Long, got [4] Long");
  EXPECT_EQ(message_of([&] { gpt_loss()({torch::zeros({2, 3, 11})}, {torch::zeros({2, 4}, torch::kLong)}); }),
            "gpt_loss expects logits [B,T,V] and target ids [B,T] Long, got logits [2,3,11] Float and targets "
            "[2,4] Long");
}

TEST(GptModel, LossIsTheMeanCrossEntropyOverAllTokens) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor logits = torch::randn({3, 5, 7}, gen, torch::TensorOptions().dtype(torch::kDouble));
  const at::Tensor ids = tokens(3, 5, 7);
  const at::Tensor want = -torch::log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).mean();
  EXPECT_NEAR(gpt_loss()({logits}, {ids}).item<double>(), want.item<double>(), 1e-14);
}

TEST(GptModel, AdamLearnsARepeatedSequence) {
  GptConfig c = small();
  c.seq_len = 16;
  Model m = build(gpt_layers(c));
  // "0 1 2 3 4 5 0 1 2 ...": the next token is always determined by the current one.
  const at::Tensor stream = torch::arange(17, torch::kLong).remainder(6);
  const at::Tensor x = stream.narrow(0, 0, 16).unsqueeze(0).repeat({2, 1});
  const at::Tensor y = stream.narrow(0, 1, 16).unsqueeze(0).repeat({2, 1});
  std::vector<at::Tensor> params;
  for (const auto& [n, t] : m.params) params.push_back(t);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-2));
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    adam.zero_grad();
    at::Tensor loss = gpt_loss()({m.forward(x)}, {y});
    loss.backward();
    adam.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_NEAR(first, std::log(11.0), 0.5);  // about uniform at the start
  EXPECT_LT(last, 0.5 * first) << "first " << first << ", last " << last;
}

}  // namespace
}  // namespace tpipe
