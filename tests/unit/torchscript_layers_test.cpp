// Layers from a TorchScript file. The modules are scripted in C++ (no Python needed) and saved
// like torch.jit.script(m).save(path) would; the whole module's own forward is the reference.
#include "tpipe/script/torchscript_layers.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "../support/temp_dir.h"
#include "tpipe/error.h"

namespace tpipe {
namespace {

using torch::jit::Module;

at::Tensor param(std::vector<std::int64_t> shape) { return torch::randn(shape, torch::kFloat64).requires_grad_(); }

// A child computing tanh(x W); each child has a type of its own, as Python's classes would.
Module linear_tanh(const std::string& type, std::int64_t in, std::int64_t out) {
  Module m(type);
  m.register_parameter("weight", param({in, out}), false);
  m.define("def forward(self, x):\n    return torch.tanh(x.mm(self.weight))\n");
  return m;
}

// A child with a submodule and a buffer, so local names have a dot: scale, ln.weight, ln.bias.
Module block(std::int64_t n) {
  Module ln("Affine");
  ln.register_parameter("weight", param({n}), false);
  ln.register_parameter("bias", param({n}), false);
  ln.register_buffer("count", torch::zeros({1}, torch::kFloat64));
  ln.define("def forward(self, x):\n    return x * self.weight + self.bias\n");
  Module b("Block");
  b.register_parameter("scale", param({n}), false);
  b.register_module("ln", ln);
  b.define("def forward(self, x):\n    return torch.sigmoid(self.ln.forward(x)) * self.scale\n");
  return b;
}

Module net(const std::vector<std::pair<std::string, Module>>& children, const std::string& forward) {
  Module m("Net");
  for (const auto& [name, child] : children) m.register_module(name, child);
  m.define(forward);
  return m;
}

// fc1 -> block -> fc2, the model most tests use.
std::string save_mlp(const std::string& dir) {
  torch::manual_seed(1);
  const std::string path = dir + "/mlp.pt";
  net({{"fc1", linear_tanh("Fc1", 3, 4)}, {"block", block(4)}, {"fc2", linear_tanh("Fc2", 4, 2)}},
      "def forward(self, x):\n    return self.fc2.forward(self.block.forward(self.fc1.forward(x)))\n")
      .save(path);
  return path;
}

std::vector<LayerPtr> build(const std::vector<LayerSpec>& specs) {
  std::vector<LayerPtr> layers;
  for (const auto& s : specs) layers.push_back(s.factory());
  return layers;
}

Payload run(const std::vector<LayerPtr>& layers, Payload p) {
  for (const auto& l : layers) p = l->forward(p);
  return p;
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::allclose(a, b, 1e-12, 1e-12)) << what << " differs by " << (a - b).abs().max().item<double>();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no ConfigError";
}

TEST(TorchScriptLayers, ChildrenInOrderWithLocalNames) {
  testing::TempDir dir;
  const auto specs = layers_from_torchscript(save_mlp(dir.path));
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.tied ? "tied!" : s.name);
  EXPECT_EQ(names, std::vector<std::string>({"fc1", "block", "fc2"}));
  const auto layers = build(specs);
  EXPECT_EQ(names_of(layers[0]->named_parameters()), std::vector<std::string>({"weight"}));
  EXPECT_EQ(names_of(layers[1]->named_parameters()), std::vector<std::string>({"scale", "ln.weight", "ln.bias"}));
  EXPECT_EQ(names_of(layers[1]->named_buffers()), std::vector<std::string>({"ln.count"}));
  EXPECT_TRUE(layers[0]->named_buffers().empty());
  for (const auto& l : layers) {
    for (const auto& [n, p] : l->named_parameters()) {
      EXPECT_TRUE(p.requires_grad()) << n;
      EXPECT_TRUE(p.is_leaf()) << n;
    }
    EXPECT_EQ(l->generators().size(), 1u);  // dropout in TorchScript draws from the process's generator
  }
}

TEST(TorchScriptLayers, ChainMatchesTheModuleAndItsGradients) {
  testing::TempDir dir;
  const std::string path = save_mlp(dir.path);
  const auto layers = build(layers_from_torchscript(path));
  Module whole = torch::jit::load(path);
  const at::Tensor x = torch::randn({5, 3}, torch::kFloat64);
  const at::Tensor w = torch::randn({5, 2}, torch::kFloat64);
  // Several passes: the JIT profiles the first runs and optimizes the later ones; gradients add up.
  for (int pass = 0; pass < 3; ++pass) {
    const Payload out = run(layers, {x});
    ASSERT_EQ(out.size(), 1u);
    const at::Tensor expected = whole.forward({x}).toTensor();
    expect_close(out[0], expected, "output");
    (out[0] * w).sum().backward();
    (expected * w).sum().backward();
  }
  const std::vector<std::string> names = {"fc1", "block", "fc2"};
  std::map<std::string, at::Tensor> ref_grads;
  for (const auto& p : whole.named_parameters()) ref_grads[p.name] = p.value.grad();
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (const auto& [n, p] : layers[i]->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << names[i] << "." << n;
      expect_close(p.grad(), ref_grads.at(names[i] + "." + n), names[i] + "." + n + " gradient");
    }
}

// split returns (tanh(x W), x); join takes them as two tensors, product as one tuple (as in an
// nn.Sequential); a payload that does not fit a forward is a ShapeError.
TEST(TorchScriptLayers, TupleOutputsBecomeMultiTensorPayloads) {
  testing::TempDir dir;
  torch::manual_seed(2);
  Module split("Split"), join("Join"), product("Product");
  split.register_parameter("weight", param({4, 4}), false);
  split.define("def forward(self, x):\n    return (torch.tanh(x.mm(self.weight)), x)\n");
  join.register_parameter("weight", param({4, 4}), false);
  join.define("def forward(self, h, x):\n    return h.mm(self.weight) + x\n");
  product.define("def forward(self, p: Tuple[Tensor, Tensor]):\n    return p[0] * p[1]\n");
  const std::string joined = dir.path + "/join.pt", multiplied = dir.path + "/product.pt";
  net({{"split", split}, {"join", join}},
      "def forward(self, x):\n    h, y = self.split.forward(x)\n    return self.join.forward(h, y)\n")
      .save(joined);
  net({{"split", split}, {"product", product}},
      "def forward(self, x):\n    return self.product.forward(self.split.forward(x))\n")
      .save(multiplied);
  const at::Tensor x = torch::randn({3, 4}, torch::kFloat64);
  for (const std::string& path : {joined, multiplied}) {
    const auto layers = build(layers_from_torchscript(path));
    const Payload mid = layers[0]->forward({x});
    ASSERT_EQ(mid.size(), 2u);
    EXPECT_TRUE(torch::equal(mid[1], x));
    const Payload out = layers[1]->forward(mid);
    ASSERT_EQ(out.size(), 1u);
    expect_close(out[0], torch::jit::load(path).forward({x}).toTensor(), path);
    if (path != joined) continue;
    try {
      layers[1]->forward({x});
      ADD_FAILURE() << "no ShapeError";
    } catch (const ShapeError& e) {
      EXPECT_STREQ(e.what(), "layer 'join' cannot take a payload of 1 tensor(s): its forward takes (h, x)");
    }
  }
}

TEST(TorchScriptLayers, FactoryCallsGiveIndependentParameters) {
  testing::TempDir dir;
  const auto specs = layers_from_torchscript(save_mlp(dir.path));
  const LayerPtr a = specs[1].factory(), b = specs[1].factory();
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_NE(pa[i].second.data_ptr(), pb[i].second.data_ptr()) << pa[i].first;
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;  // both the file's values
  }
  EXPECT_NE(a->named_buffers()[0].second.data_ptr(), b->named_buffers()[0].second.data_ptr());
  pa[0].second.detach().add_(1.0);
  EXPECT_FALSE(torch::equal(pa[0].second, pb[0].second));
  // Gradients land in the copy that computed, not in the other one nor the file's.
  a->forward({torch::randn({2, 4}, torch::kFloat64)})[0].sum().backward();
  EXPECT_TRUE(pa[0].second.grad().defined());
  EXPECT_FALSE(pb[0].second.grad().defined());
}

TEST(TorchScriptLayers, TrainSwitchesTheChildsMode) {
  testing::TempDir dir;
  Module drop("Drop");
  drop.register_attribute("training", c10::BoolType::get(), true);  // Python's modules all have it
  drop.define("def forward(self, x):\n    return torch.dropout(x, 0.5, self.training)\n");
  const std::string path = dir.path + "/drop.pt";
  net({{"drop", drop}}, "def forward(self, x):\n    return self.drop.forward(x)\n").save(path);
  const LayerPtr layer = layers_from_torchscript(path)[0].factory();
  const at::Tensor x = torch::ones({64}, torch::kFloat64);
  layer->train(false);
  EXPECT_TRUE(torch::equal(layer->forward({x})[0], x));
  layer->train(true);
  const at::Tensor y = layer->forward({x})[0];
  EXPECT_GT((y == 0).sum().item<std::int64_t>(), 0);
  EXPECT_GT((y == 2).sum().item<std::int64_t>(), 0);
}

// ---- what is rejected ----------------------------------------------------------------------

TEST(TorchScriptErrors, FilesWithoutLayers) {
  testing::TempDir dir;
  const std::string missing = dir.path + "/missing.pt", text = dir.path + "/notes.pt", leaf = dir.path + "/leaf.pt";
  std::ofstream(text) << "not a model\n";
  linear_tanh("Leaf", 3, 3).save(leaf);
  EXPECT_EQ(error_of([&] { layers_from_torchscript(missing); }),
            "cannot load TorchScript file " + missing + ": No such file or directory");
  EXPECT_EQ(error_of([&] { layers_from_torchscript(text); }),
            "cannot load TorchScript file " + text + ": it is not a TorchScript file (not even a zip archive); save "
            "the model with torch.jit.script(model).save(PATH)");
  // What Python's torch.save writes (a state_dict, or the data file given as the model).
  const std::string saved = dir.path + "/state.pt";
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(at::ones({2})));
  std::ofstream(saved, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_EQ(error_of([&] { layers_from_torchscript(saved); }),
            "cannot load TorchScript file " + saved + ": it is a torch.save file (a state_dict or data?), not "
            "TorchScript; save the model with torch.jit.script(model).save(PATH)");
  EXPECT_EQ(error_of([&] { layers_from_torchscript(leaf); }),
            "cannot use TorchScript file " + leaf + ": __torch__.Leaf has no child modules; tpipe's layers are the "
            "children of an nn.Sequential or of a module that applies its children in order");
}

// A parent over a (3 -> 3) and b (3 -> 3), or over a and a two-argument join.
TEST(TorchScriptErrors, ParentThatDoesMoreThanChainItsChildren) {
  const std::string two_calls = "return self.b.forward(self.a.forward(x)) + self.a.forward(x)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {two_calls, "calls child 'a' twice"},
      {"return self.a.forward(self.b.forward(x))", "calls child 'b' before 'a'"},
      {"return self.b.forward(self.a.forward(x) * 2.0)", "computes aten::mul besides calling its children"},
      {"return self.a.forward(x)", "never calls child 'b'"},
      {"return self.join.forward(self.a.forward(x), x)", "passes child 'join' other values than the output of 'a'"},
  };
  for (const auto& [body, why] : cases) {
    SCOPED_TRACE(body);
    testing::TempDir dir;
    const std::string path = dir.path + "/net.pt";
    Module join("Join");
    join.define("def forward(self, h, x):\n    return h + x\n");
    const bool joins = body.find("join") != std::string::npos;
    net({{"a", linear_tanh("A", 3, 3)}, {joins ? "join" : "b", joins ? join : linear_tanh("B", 3, 3)}},
        "def forward(self, x):\n    " + body + "\n")
        .save(path);
    EXPECT_EQ(error_of([&] { layers_from_torchscript(path); }),
              "cannot use TorchScript file " + path + ": the forward of __torch__.Net " + why +
                  "; supported: an nn.Sequential, or a module whose forward calls each direct child once, in "
                  "attribute order, on the previous child's output");
  }
}

// Children taking or returning what a payload cannot hold, and a weight two children share.
TEST(TorchScriptErrors, ChildrenThatCannotBeLayers) {
  testing::TempDir dir;
  Module scale("Scale"), shape("Shape"), a = linear_tanh("A", 3, 3), b("B");
  b.register_parameter("tied", a.attr("weight").toTensor(), false);
  b.define("def forward(self, x):\n    return x.mm(self.tied)\n");
  const std::string tied = dir.path + "/tied.pt";
  net({{"a", a}, {"b", b}}, "def forward(self, x):\n    return self.b.forward(self.a.forward(x))\n").save(tied);
  EXPECT_EQ(error_of([&] { layers_from_torchscript(tied); }),
            "cannot use TorchScript file " + tied +
                ": 'a.weight' and 'b.tied' are one tensor (tied weights), which two layers cannot share");
  scale.define("def forward(self, x, n: int):\n    return x * n\n");
  shape.define("def forward(self, x):\n    return x.size(0)\n");
  const std::string takes = dir.path + "/takes.pt", returns = dir.path + "/returns.pt";
  net({{"a", linear_tanh("A", 3, 3)}, {"scale", scale}},
      "def forward(self, x):\n    return self.scale.forward(self.a.forward(x), 2)\n")
      .save(takes);
  net({{"shape", shape}}, "def forward(self, x):\n    return self.shape.forward(x)\n").save(returns);
  EXPECT_EQ(error_of([&] { layers_from_torchscript(takes); }),
            "cannot use TorchScript file " + takes +
                ": child 'scale' (__torch__.Scale) takes 'n' of type int, which a payload of tensors cannot give; a "
                "layer's forward takes tensors and tuples of tensors");
  EXPECT_EQ(error_of([&] { layers_from_torchscript(returns); }),
            "cannot use TorchScript file " + returns +
                ": child 'shape' (__torch__.Shape) returns int; a layer must return a tensor or a tuple of tensors");
}

// ---- writing the trained model back ----------------------------------------------------------

TEST(TorchScriptExport, WritesTheGivenWeights) {
  testing::TempDir dir;
  const std::string path = save_mlp(dir.path), out = dir.path + "/trained.pt";
  const auto specs = layers_from_torchscript(path);
  const auto layers = build(specs);
  {
    torch::NoGradGuard no_grad;  // stands in for training
    for (const auto& l : layers) {
      for (auto& [n, p] : l->named_parameters()) p.mul_(0.5).add_(0.25);
      for (auto& [n, b] : l->named_buffers()) b.fill_(7.0);
    }
  }
  std::map<std::string, at::Tensor> weights;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    for (const auto& [n, p] : layers[i]->named_parameters()) weights[specs[i].name + "." + n] = p;
    for (const auto& [n, b] : layers[i]->named_buffers()) weights[specs[i].name + "." + n] = b;
  }
  export_torchscript(path, weights, out);
  Module trained = torch::jit::load(out);
  EXPECT_TRUE(torch::equal(trained.attr("fc1").toModule().attr("weight").toTensor(), weights.at("fc1.weight")));
  EXPECT_TRUE(torch::equal(trained.attr("block").toModule().attr("ln").toModule().attr("count").toTensor(),
                           torch::full({1}, 7.0, torch::kFloat64)));
  const at::Tensor x = torch::randn({4, 3}, torch::kFloat64);
  expect_close(trained.forward({x}).toTensor(), run(layers, {x})[0], "output of the exported model");
  // Only the two model files: the temporary was renamed.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator()), 2);
}

TEST(TorchScriptExport, RejectsUnknownNamesAndOtherShapes) {
  testing::TempDir dir;
  const std::string path = save_mlp(dir.path), out = dir.path + "/trained.pt";
  const at::Tensor w = torch::zeros({4, 3}, torch::kFloat64);
  EXPECT_EQ(error_of([&] { export_torchscript(path, {{"fc9.weight", w}}, out); }),
            "cannot export to " + out + ": " + path + " has no parameter or buffer 'fc9.weight'");
  EXPECT_EQ(error_of([&] { export_torchscript(path, {{"fc1.weight", w}}, out); }),
            "cannot export to " + out + ": 'fc1.weight' is [3, 4] in " + path + ", got [4, 3]");
  EXPECT_FALSE(std::filesystem::exists(out));  // nothing half-written
}

}  // namespace
}  // namespace tpipe
