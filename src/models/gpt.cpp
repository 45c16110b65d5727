// A small GPT as LayerSpecs. The first and the last position share the token embedding "wte":
//
//   ids [B,T] --> embed --> pos --> block0 --> ... --> block{L-1} --> ln_f --> lm_head --> logits [B,T,V]
//                   |                                                          |
//                   +------------------ "wte" [V,dim] (tied) -------------------+
//                 h = wte[ids]                                      logits = h wte^T
//
// Each block is pre-LayerNorm:  h += attn(ln1(h));  h += mlp(ln2(h)).
// A stage may start or end between any two layers; between layers the payload is {h [B,T,dim]}.
// Weights come from a generator per layer, seeded by (config seed, layer name): ranks that are
// threads of one process must not race on the global RNG, and every stage that holds a position
// of the tie must build bit-identical copies of "wte".
#include "tpipe/models/gpt.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "tpipe/error.h"

namespace tpipe {
namespace {

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "] " + c10::toString(t.scalar_type());
}

// FNV-1a rather than std::hash: the seed must not depend on the standard library of a process.
std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// ATen's mt19937 keeps only the low 32 bits of its seed, so fold the high half in.
at::Generator layer_generator(const GptConfig& c, const std::string& name) {
  std::uint64_t s = c.seed * 1000003ull + name_hash(name);
  return at::make_generator<at::CPUGeneratorImpl>(s ^ (s >> 32));
}

// The generator of a layer's dropout masks, apart from its initialisation's.
at::Generator dropout_generator(const GptConfig& c, const std::string& name) {
  return layer_generator(c, name + ".dropout");
}

// Inverted dropout with masks from `gen` (torch::dropout would draw from the process's generator,
// which ranks that are threads of one process share).
at::Tensor dropout(const at::Tensor& x, double p, bool training, at::Generator& gen) {
  if (!training || p == 0) return x;
  return x * at::empty_like(x).bernoulli_(1 - p, gen) / (1 - p);
}

// GPT-2's initialisation, in the order of m.named_modules() so it is the same on every rank. The
// projections that write into the residual stream (attn.proj, mlp.proj) start smaller, with std
// 0.02 / sqrt(2 x layers): each block adds two of them to the stream.
void gpt2_init(torch::nn::Module& m, const GptConfig& c, const std::string& name) {
  m.to(c.dtype);
  torch::NoGradGuard no_grad;
  auto gen = layer_generator(c, name);
  const double residual_std = 0.02 / std::sqrt(2.0 * c.layers);
  for (const auto& item : m.named_modules()) {
    const auto& sub = item.value();
    const std::string& path = item.key();
    if (auto* lin = dynamic_cast<torch::nn::LinearImpl*>(sub.get())) {
      const bool residual = path == "attn.proj" || path == "mlp.proj";
      lin->weight.normal_(0, residual ? residual_std : 0.02, gen);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(sub.get())) {
      emb->weight.normal_(0, 0.02, gen);
    } else if (auto* ln = dynamic_cast<torch::nn::LayerNormImpl*>(sub.get())) {
      ln->weight.fill_(1);
      ln->bias.zero_();
    }
  }
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int dim, int heads, double p, at::Generator gen) : heads(heads), p(p), gen(std::move(gen)) {
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads;
    auto qkv_parts = qkv(x).chunk(3, -1);
    auto split_heads = [&](const at::Tensor& t) { return t.reshape({B, T, heads, hd}).transpose(1, 2); };
    auto q = split_heads(qkv_parts[0]), k = split_heads(qkv_parts[1]), v = split_heads(qkv_parts[2]);
    auto scores = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));  // [B,H,T,T]
    // exp(-inf) is exactly 0, so a token's output cannot depend on later tokens, not even by rounding.
    auto future = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    auto y = dropout(torch::softmax(scores, -1), p, is_training(), gen).matmul(v);  // [B,H,T,hd]
    return proj(y.transpose(1, 2).reshape({B, T, D}));
  }
  int64_t heads;
  double p;
  at::Generator gen;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(int dim) {
    fc = register_module("fc", torch::nn::Linear(dim, 4 * dim));
    proj = register_module("proj", torch::nn::Linear(4 * dim, dim));
  }
  at::Tensor forward(const at::Tensor& x) { return proj(torch::gelu(fc(x))); }
  torch::nn::Linear fc{nullptr}, proj{nullptr};
};

struct BlockImpl : torch::nn::Module {
  BlockImpl(int dim, int heads, double p, at::Generator gen) : p(p), gen(gen) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn = register_module("attn", std::make_shared<AttentionImpl>(dim, heads, p, gen));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    mlp = register_module("mlp", std::make_shared<MlpImpl>(dim));
  }
  at::Tensor forward(at::Tensor h) {
    h = h + dropout(attn->forward(ln1(h)), p, is_training(), gen);
    return h + dropout(mlp->forward(ln2(h)), p, is_training(), gen);
  }
  double p;
  at::Generator gen;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  std::shared_ptr<AttentionImpl> attn;
  std::shared_ptr<MlpImpl> mlp;
};

struct PositionImpl : torch::nn::Module {
  PositionImpl(int seq_len, int dim) { weight = register_parameter("weight", torch::empty({seq_len, dim})); }
  at::Tensor weight;
};

void expect_hidden(const at::Tensor& h, int dim, const char* layer) {
  if (!h.defined() || h.dim() != 3 || h.size(2) != dim || !h.is_floating_point())
    throw ShapeError(std::string("GPT ") + layer + " expects hidden states [B,T," + std::to_string(dim) +
                     "] floating, got " + describe(h));
}

torch::nn::EmbeddingImpl& as_embedding(torch::nn::Module& m) {
  auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(&m);
  if (!emb) throw ConfigError("GPT tie 'wte' must hold a torch::nn::Embedding, got " + m.name());
  return *emb;
}

std::shared_ptr<torch::nn::Module> make_wte(const GptConfig& c) {
  auto wte = torch::nn::Embedding(c.vocab, c.dim).ptr();
  gpt2_init(*wte, c, "wte");
  return wte;
}

Payload embed_forward(torch::nn::Module& m, const Payload& in) {
  auto& wte = as_embedding(m);
  const at::Tensor ids = in.empty() ? at::Tensor() : in[0];
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != at::kLong)
    throw ShapeError("GPT embed expects token ids [B,T] Long, got " + describe(ids));
  const int64_t vocab = wte.weight.size(0);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= vocab)
      throw ShapeError("GPT embed: token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0," +
                       std::to_string(vocab) + ") (--vocab " + std::to_string(vocab) + ")");
  }
  return {wte.forward(ids)};
}

Payload lm_head_forward(torch::nn::Module& m, const Payload& in) {
  auto& wte = as_embedding(m);
  const at::Tensor h = in.empty() ? at::Tensor() : in[0];
  expect_hidden(h, static_cast<int>(wte.weight.size(1)), "lm_head");
  return {h.matmul(wte.weight.t())};
}

}  // namespace

void check_config(const GptConfig& c) {
  const std::pair<const char*, int> positive[] = {
      {"--vocab", c.vocab}, {"--dim", c.dim}, {"--heads", c.heads}, {"--layers", c.layers}, {"--seq-len", c.seq_len}};
  for (const auto& [flag, value] : positive)
    if (value < 1) throw ConfigError(std::string(flag) + " must be at least 1, got " + std::to_string(value));
  if (c.dim % c.heads != 0)
    throw ConfigError("--dim " + std::to_string(c.dim) + " is not divisible by --heads " + std::to_string(c.heads));
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw ConfigError("--dropout must be in [0, 1), got " + std::to_string(c.dropout));
  if (!at::isFloatingType(c.dtype))
    throw ConfigError(std::string("--dtype must be a floating-point type, got ") + c10::toString(c.dtype));
}

std::vector<LayerSpec> gpt_layers(const GptConfig& c) {
  check_config(c);
  std::vector<LayerSpec> specs;
  specs.push_back(tied_layer("embed", {"wte", [c] { return make_wte(c); }, embed_forward}));

  specs.push_back({"pos", [c] {
                     auto pos = std::make_shared<PositionImpl>(c.seq_len, c.dim);
                     pos->to(c.dtype);
                     torch::NoGradGuard no_grad;
                     auto gen = layer_generator(c, "pos");
                     pos->weight.normal_(0, 0.01, gen);
                     auto drop = dropout_generator(c, "pos");
                     return tensor_layer(pos, [pos, c, drop](const at::Tensor& h) mutable {
                       expect_hidden(h, c.dim, "pos");
                       const int64_t T = h.size(1);
                       if (T > c.seq_len)
                         throw ShapeError("GPT pos: a sequence of " + std::to_string(T) +
                                          " tokens is longer than --seq-len " + std::to_string(c.seq_len));
                       return dropout(h + pos->weight.narrow(0, 0, T), c.dropout, pos->is_training(), drop);
                     }, std::vector<at::Generator>{drop});
                   }});

  for (int i = 0; i < c.layers; ++i) {
    const std::string name = "block" + std::to_string(i);
    specs.push_back({name, [c, name] {
                       auto block = std::make_shared<BlockImpl>(c.dim, c.heads, c.dropout, dropout_generator(c, name));
                       gpt2_init(*block, c, name);
                       return tensor_layer(block, [block, c](const at::Tensor& h) {
                         expect_hidden(h, c.dim, "block");
                         return block->forward(h);
                       }, std::vector<at::Generator>{block->gen});
                     }});
  }

  specs.push_back({"ln_f", [c] {
                     auto ln = torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})).ptr();
                     gpt2_init(*ln, c, "ln_f");
                     return tensor_layer(ln, [ln, c](const at::Tensor& h) {
                       expect_hidden(h, c.dim, "ln_f");
                       return ln->forward(h);
                     }, std::vector<at::Generator>{});
                   }});

  specs.push_back(tied_layer("lm_head", {"wte", [c] { return make_wte(c); }, lm_head_forward}));
  return specs;
}

LossFn gpt_loss() {
  return [](const Payload& out, const Payload& tgt) {
    const at::Tensor logits = out.empty() ? at::Tensor() : out[0];
    const at::Tensor ids = tgt.empty() ? at::Tensor() : tgt[0];
    if (!logits.defined() || !ids.defined() || logits.dim() != 3 || ids.dim() != 2 ||
        ids.scalar_type() != at::kLong || logits.size(0) != ids.size(0) || logits.size(1) != ids.size(1))
      throw ShapeError("gpt_loss expects logits [B,T,V] and target ids [B,T] Long, got logits " + describe(logits) +
                       " and targets " + describe(ids));
    // Every sequence has T tokens, so the mean over a micro-batch's tokens weighted by its rows is
    // the mean over the batch's tokens, as the engine's loss weighting assumes.
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), ids.reshape({-1}));
  };
}

double gpt_flops_per_token(const GptConfig& c, int t) {
  const double d = c.dim, matmul_params = 12.0 * c.layers * d * d + static_cast<double>(c.vocab) * d;
  return 6.0 * matmul_params + 12.0 * c.layers * t * d;
}

}  // namespace tpipe
