// Layers from a TorchScript file (see torchscript_layers.h): load, check that the parent only
// chains its children, and wrap each child as a Layer that calls its scripted forward.
#include "tpipe/script/torchscript_layers.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>

#include "tpipe/error.h"
#include "tpipe/util/files.h"

namespace tpipe {
namespace {

using torch::jit::Module;

// c10's messages carry a backtrace and the JIT's start with a blank line: keep the first line
// that says something.
std::string first_line(const std::string& text) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const std::size_t begin = line.find_first_not_of(" \t\r");
    if (begin != std::string::npos) return line.substr(begin, line.find_last_not_of(" \t\r") + 1 - begin);
  }
  return "unknown error";
}

Module load(const std::string& path) {
  const std::string prefix = "cannot load TorchScript file " + path + ": ";
  // c10 words a missing file "open file failed because of errno 2 on fopen: , file path: ...".
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ConfigError(prefix + std::strerror(errno));
  std::fclose(f);
  const std::string how = "save the model with torch.jit.script(model).save(PATH)";
  try {
    return torch::jit::load(path);
  } catch (const c10::Error& e) {
    const std::string why = first_line(e.msg());
    // LibTorch's words for "no zip archive" and "a zip archive without TorchScript's parts".
    if (why.find("not a ZIP archive") != std::string::npos)
      throw ConfigError(prefix + "it is not a TorchScript file (not even a zip archive); " + how);
    if (why.find("constants.pkl") != std::string::npos || why.find("code/") != std::string::npos)
      throw ConfigError(prefix + "it is a torch.save file (a state_dict or data?), not TorchScript; " + how);
    throw ConfigError(prefix + why);
  } catch (const std::exception& e) {
    throw ConfigError(prefix + first_line(e.what()));
  }
}

std::string type_name(const Module& m) { return m.type()->name()->qualifiedName(); }

// How many payload tensors a value of type `t` is made of, or -1 when a payload cannot give it.
int tensor_count(const c10::TypePtr& t) {
  if (t->kind() == c10::TypeKind::TensorType) return 1;
  if (const auto opt = t->cast<c10::OptionalType>()) return opt->getElementType()->cast<c10::TensorType>() ? 1 : -1;
  const auto tuple = t->cast<c10::TupleType>();
  if (!tuple) return -1;
  int n = 0;
  for (const auto& e : tuple->elements()) {
    const int k = tensor_count(e);
    if (k < 0) return -1;
    n += k;
  }
  return n;
}

// The arguments of a child's forward that the payload fills, in order; those with a default may
// be left out by a payload that ends before them.
struct Signature {
  std::vector<c10::Argument> args;
  std::string text;  // "(h, x)", for messages
};

Signature signature_of(const std::string& where, const std::string& child_name, const Module& child) {
  const std::string child_desc = "child '" + child_name + "' (" + type_name(child) + ")";
  const auto method = child.find_method("forward");
  if (!method) throw ConfigError(where + child_desc + " has no forward");
  const c10::FunctionSchema& schema = method->function().getSchema();
  Signature sig;
  bool reachable = true;  // arguments after one a payload cannot give can only keep their defaults
  for (std::size_t i = 1; i < schema.arguments().size(); ++i) {
    const c10::Argument& a = schema.arguments()[i];
    const bool has_default = a.default_value().has_value();
    reachable = reachable && tensor_count(a.type()) >= 0;
    if (reachable) {
      sig.args.push_back(a);
      sig.text += (sig.text.empty() ? "" : ", ") + a.name();
    } else if (!has_default) {
      throw ConfigError(where + child_desc + " takes '" + a.name() + "' of type " + a.type()->annotation_str() +
                        ", which a payload of tensors cannot give; a layer's forward takes tensors and tuples of "
                        "tensors");
    }
  }
  sig.text = "(" + sig.text + ")";
  const c10::TypePtr returned = schema.returns().at(0).type();  // a TorchScript method returns one value
  if (tensor_count(returned) < 0)
    throw ConfigError(where + child_desc + " returns " + returned->annotation_str() +
                      "; a layer must return a tensor or a tuple of tensors");
  return sig;
}

// Verifies on the saved graph that the parent's forward is exactly  in -> children[0] -> ... ->
// children[n-1] -> return,  where a tuple between two children may be unpacked into the next one's
// arguments (or packed again). Any other node (but unused constants) is rejected, so no value
// can bypass a child or be combined with another.
void check_chain(const std::string& where, const Module& root, const std::vector<std::string>& children) {
  const std::string head = where + "the forward of " + type_name(root) + " ";
  const std::string supported = "; supported: an nn.Sequential, or a module whose forward calls each direct child "
                                "once, in attribute order, on the previous child's output";
  auto fail = [&](const std::string& why) { throw ConfigError(head + why + supported); };
  const auto forward = root.find_method("forward");
  if (!forward) throw ConfigError(where + type_name(root) + " has no forward");
  const std::shared_ptr<torch::jit::Graph> graph = forward->graph();
  const torch::jit::Value* self = graph->inputs()[0];
  std::map<const torch::jit::Value*, std::string> child_of;
  std::vector<const torch::jit::Value*> current(graph->inputs().begin() + 1, graph->inputs().end());
  auto same = [&](auto values) { return std::equal(values.begin(), values.end(), current.begin(), current.end()); };
  std::size_t called = 0;
  for (const torch::jit::Node* n : graph->nodes()) {
    const c10::Symbol kind = n->kind();
    if (kind == c10::prim::Constant) continue;  // an unused constant; a used one fails below
    if (kind == c10::prim::GetAttr) {
      const std::string attr = n->s(torch::jit::attr::name);
      if (n->input() != self || std::find(children.begin(), children.end(), attr) == children.end())
        fail("reads '" + attr + "', which is not one of its children");
      child_of[n->output()] = attr;
    } else if (kind == c10::prim::CallMethod) {
      const auto it = child_of.find(n->inputs()[0]);
      if (it == child_of.end()) fail("calls a method of something that is not one of its children");
      const std::string& child = it->second;
      const std::string method = n->s(torch::jit::attr::name);
      if (method != "forward") fail("calls '" + child + "." + method + "'");
      if (std::find(children.begin(), children.begin() + called, child) != children.begin() + called)
        fail("calls child '" + child + "' twice");
      if (child != children[called]) fail("calls child '" + child + "' before '" + children[called] + "'");
      if (!same(n->inputs().slice(1)))
        fail("passes child '" + child + "' other values than " +
             (called == 0 ? std::string("its own inputs") : "the output of '" + children[called - 1] + "'"));
      current = {n->output()};
      ++called;
    } else if (kind == c10::prim::TupleUnpack && same(n->inputs())) {
      current.assign(n->outputs().begin(), n->outputs().end());
    } else if (kind == c10::prim::TupleConstruct && same(n->inputs())) {
      current = {n->output()};
    } else {
      fail("computes " + std::string(kind.toQualString()) + " besides calling its children");
    }
  }
  if (called < children.size()) fail("never calls child '" + children[called] + "'");
  if (!same(graph->outputs())) fail("returns something other than the output of '" + children.back() + "'");
}

c10::IValue pack(const c10::TypePtr& type, const Payload& in, std::size_t& next) {
  const auto tuple = type->cast<c10::TupleType>();
  if (!tuple) return in[next++];
  std::vector<c10::IValue> items;
  for (const auto& e : tuple->elements()) items.push_back(pack(e, in, next));
  return c10::ivalue::Tuple::create(std::move(items));
}

bool flatten(const c10::IValue& v, Payload& out) {
  if (v.isTensor()) out.push_back(v.toTensor());
  if (!v.isTuple()) return v.isTensor();
  for (const auto& e : v.toTuple()->elements())
    if (!flatten(e, out)) return false;
  return true;
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

template <class Slots>
Named listed(const Slots& slots) {
  Named out;
  for (const auto& s : slots) out.emplace_back(s.name, s.value);
  return out;
}

class ScriptLayer : public Layer {
 public:
  ScriptLayer(std::string name, Module child, Signature sig)
      : name_(std::move(name)), child_(std::move(child)), sig_(std::move(sig)) {}

  Payload forward(const Payload& in) override {
    auto misfit = [&] {
      return ShapeError("layer '" + name_ + "' cannot take a payload of " + std::to_string(in.size()) +
                        " tensor(s): its forward takes " + sig_.text);
    };
    std::vector<c10::IValue> args;
    std::size_t next = 0;
    for (const auto& a : sig_.args) {
      if (next == in.size() && a.default_value()) break;
      if (in.size() - next < static_cast<std::size_t>(tensor_count(a.type()))) throw misfit();
      args.push_back(pack(a.type(), in, next));
    }
    if (next != in.size()) throw misfit();
    const c10::IValue out = child_.forward(std::move(args));
    Payload result;
    if (!flatten(out, result))
      throw ShapeError("layer '" + name_ + "' returned " + out.type()->annotation_str() +
                       "; a layer must return a tensor or a tuple of tensors");
    return result;
  }
  Named named_parameters() const override { return listed(child_.named_parameters(/*recurse=*/true)); }
  Named named_buffers() const override { return listed(child_.named_buffers(/*recurse=*/true)); }
  void train(bool on) override { child_.train(on); }

 private:
  std::string name_;
  Module child_;
  Signature sig_;
};

// A child of the file loaded once for all specs (`root` is only read, so ranks that are threads
// may copy at once). Module::deepcopy clones every tensor; under grad mode a parameter's clone
// would be a non-leaf whose gradient flows into the original instead of its own .grad. So copy
// without grad, then give the copies the originals' requires_grad.
// Converts the floating-point parameters and buffers of `m` in place (Module::to would convert
// integer buffers too).
void cast_floating(const Module& m, std::optional<at::ScalarType> dtype) {
  if (!dtype) return;
  at::NoGradGuard no_grad;
  for (at::Tensor t : m.parameters(/*recurse=*/true))
    if (t.is_floating_point()) t.set_data(t.to(*dtype));
  for (at::Tensor t : m.buffers(/*recurse=*/true))
    if (t.is_floating_point()) t.set_data(t.to(*dtype));
}

Module copy_child(const Module& root, const std::string& name, std::optional<at::ScalarType> dtype) {
  at::NoGradGuard no_grad;
  const Module original = root.attr(name).toModule();
  const Module copy = original.deepcopy();
  const auto copies = copy.parameters();
  auto to = copies.begin();  // the same slots in the same order
  for (const at::Tensor& p : original.parameters()) (*to++).requires_grad_(p.requires_grad());
  cast_floating(copy, dtype);
  return copy;
}

}  // namespace

std::vector<LayerSpec> layers_from_torchscript(const std::string& path, std::optional<at::ScalarType> dtype) {
  const auto root = std::make_shared<const Module>(load(path));
  const std::string where = "cannot use TorchScript file " + path + ": ";
  std::vector<std::string> names;
  std::vector<Signature> signatures;
  // A weight two children share (a tied embedding) would become two weights trained apart.
  std::map<const void*, std::string> user_of;  // storage -> its first "<child>.<name>"
  for (const auto& child : root->named_children()) {
    names.push_back(child.name);
    signatures.push_back(signature_of(where, child.name, child.value));
    for (const auto& [n, p] : listed(child.value.named_parameters(/*recurse=*/true))) {
      const auto [it, fresh] = user_of.emplace(p.storage().unsafeGetStorageImpl(), child.name + "." + n);
      if (!fresh && it->second.rfind(child.name + ".", 0) != 0)
        throw ConfigError(where + "'" + it->second + "' and '" + child.name + "." + n + "' are one tensor (tied " +
                          "weights), which two layers cannot share");
    }
  }
  if (names.empty())
    throw ConfigError(where + type_name(*root) + " has no child modules; tpipe's layers are the children of " +
                      "an nn.Sequential or of a module that applies its children in order");
  check_chain(where, *root, names);
  std::vector<LayerSpec> specs;
  for (std::size_t i = 0; i < names.size(); ++i)
    specs.push_back({names[i], [root, name = names[i], sig = signatures[i], dtype]() -> LayerPtr {
                       return std::make_shared<ScriptLayer>(name, copy_child(*root, name, dtype), sig);
                     }, nullptr});
  return specs;
}

void export_torchscript(const std::string& path, const std::map<std::string, at::Tensor>& weights,
                        const std::string& out, std::optional<at::ScalarType> dtype) {
  Module root = load(path);
  cast_floating(root, dtype);
  const std::string prefix = "cannot export to " + out + ": ";
  // Recursive names from the root are "<child>.<local name>": the layers' names joined.
  std::map<std::string, at::Tensor> slots;
  for (const auto& [n, t] : listed(root.named_parameters(/*recurse=*/true))) slots.emplace(n, t);
  for (const auto& [n, t] : listed(root.named_buffers(/*recurse=*/true))) slots.emplace(n, t);
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, value] : weights) {
      const auto it = slots.find(name);
      if (it == slots.end()) throw ConfigError(prefix + path + " has no parameter or buffer '" + name + "'");
      if (it->second.sizes() != value.sizes())
        throw ConfigError(prefix + "'" + name + "' is " + c10::str(it->second.sizes()) + " in " + path + ", got " +
                          c10::str(value.sizes()));
      it->second.copy_(value);
    }
  }
  // A failed write must not throw through the serializer (its writer would be called again):
  // keep the first error and throw it once the serializer is done.
  AtomicFile file(out);
  std::exception_ptr failed;
  try {
    torch::jit::ExportModule(root, [&](const void* data, std::size_t n) -> std::size_t {
      try {
        if (!failed) file.write(data, n);
      } catch (...) {
        failed = std::current_exception();
      }
      return n;
    });
  } catch (const c10::Error& e) {
    throw ConfigError(prefix + first_line(e.msg()));
  }
  if (failed) std::rethrow_exception(failed);
  file.commit();
}

}  // namespace tpipe
