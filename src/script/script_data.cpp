// Data and loss for models trained from Python files (see script_data.h).
#include "tpipe/script/script_data.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/serialize.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>

#include "tpipe/error.h"

namespace tpipe {
namespace {

std::string shape(const at::Tensor& t) {
  std::ostringstream s;
  s << '[';
  for (std::int64_t i = 0; i < t.dim(); ++i) s << (i ? "," : "") << t.size(i);
  s << ']';
  return s.str();
}

// c10 messages carry a backtrace and several lines; ours are one line.
std::string first_line(const c10::Error& e) {
  const std::string m = e.what_without_backtrace();
  return m.substr(0, m.find('\n'));
}

// The Python name of what was found where a tensor was expected.
std::string kind(const c10::IValue& v) {
  if (v.isTensor()) return "a tensor";
  if (v.isTuple()) return "a tuple";
  if (v.isList()) return "a list";
  if (v.isGenericDict()) return "a dict";
  if (v.isInt()) return "an int";
  if (v.isDouble()) return "a float";
  if (v.isBool()) return "a bool";
  if (v.isString()) return "a str";
  if (v.isNone()) return "None";
  return "a " + std::string(v.tagKind());
}

// A missing path or a directory, in the same words for data and loss files.
void check_file(const std::string& what, const std::string& path) {
  if (!std::filesystem::exists(path)) throw ConfigError(what + " " + path + " does not exist");
  if (std::filesystem::is_directory(path)) throw ConfigError(what + " " + path + " is a directory, not a file");
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("data file " + path + " cannot be read");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// inputs / targets: one tensor, or a tuple or list of tensors, appended to `out` under `name`.
void collect(const std::string& path, const std::string& name, const c10::IValue& v, Payload& out,
             std::vector<std::string>& names) {
  const auto one = [&](const c10::IValue& t, const std::string& n) {
    if (!t.isTensor()) throw ConfigError("data file " + path + ": " + n + " is " + kind(t) + ", expected a tensor");
    // Python may have saved tensors that require grad; data is data.
    out.push_back(t.toTensor().detach());
    names.push_back(n);
  };
  if (v.isTensor()) return one(v, name);
  if (!v.isTuple() && !v.isList())
    throw ConfigError("data file " + path + ": " + name + " is " + kind(v) +
                      ", expected a tensor or a tuple of tensors");
  const auto items = v.isTuple() ? v.toTupleRef().elements().vec() : v.toListRef().vec();
  if (items.empty()) throw ConfigError("data file " + path + ": " + name + " is empty, expected at least one tensor");
  for (std::size_t i = 0; i < items.size(); ++i) one(items[i], name + "[" + std::to_string(i) + "]");
}

}  // namespace

ScriptData load_script_data(const std::string& path) {
  check_file("data file", path);
  const std::vector<char> bytes = read_bytes(path);
  // torch.save's zip archive; the legacy format (before 1.6) is a bare pickle LibTorch cannot read.
  if (bytes.size() < 4 || std::string(bytes.data(), 4) != std::string("PK\x03\x04", 4))
    throw ConfigError("data file " + path +
                      " is not a torch.save file (expected the zip format PyTorch >= 1.6 writes)");
  c10::IValue top;
  try {
    top = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    // A TorchScript module is a zip of pickles too; its classes (__torch__.*) are no data.
    if (first_line(e).find("__torch__") != std::string::npos)
      throw ConfigError("data file " + path +
                        " is a TorchScript module, not data; save the data with torch.save((inputs, targets), path)");
    throw ConfigError("data file " + path + " is not torch.save data LibTorch can read: " + first_line(e));
  }
  const std::string expected = "expected a tuple (inputs, targets) or a dict with keys \"inputs\" and \"targets\"";
  c10::IValue inputs, targets;
  if (top.isGenericDict()) {
    const auto dict = top.toGenericDict();
    std::string keys;
    for (const auto& item : dict)
      keys += std::string(keys.empty() ? "" : ", ") +
              (item.key().isString() ? "\"" + item.key().toStringRef() + "\"" : kind(item.key()));
    const auto find = [&](const char* key) {
      for (const auto& item : dict)
        if (item.key().isString() && item.key().toStringRef() == key) return item.value();
      throw ConfigError("data file " + path + " holds a dict with keys " + (keys.empty() ? "(none)" : keys) + "; " +
                        expected);
    };
    inputs = find("inputs");
    targets = find("targets");
  } else if (top.isTuple() || top.isList()) {
    const auto items = top.isTuple() ? top.toTupleRef().elements().vec() : top.toListRef().vec();
    if (items.size() != 2)
      throw ConfigError("data file " + path + " holds " + kind(top) + " of " + std::to_string(items.size()) +
                        " items; " + expected);
    inputs = items[0];
    targets = items[1];
  } else {
    throw ConfigError("data file " + path + " holds " + kind(top) + "; " + expected);
  }

  ScriptData d;
  std::vector<std::string> names;
  collect(path, "inputs", inputs, d.inputs, names);
  collect(path, "targets", targets, d.targets, names);
  Payload all = d.inputs;
  all.insert(all.end(), d.targets.begin(), d.targets.end());
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].dim() == 0)
      throw ConfigError("data file " + path + ": " + names[i] +
                        " is a 0-dim tensor; every tensor needs the batch as its first dimension");
    if (all[i].size(0) != all[0].size(0))
      throw ConfigError("data file " + path + ": " + names[i] + " has " + std::to_string(all[i].size(0)) +
                        " rows (shape " + shape(all[i]) + "), " + names[0] + " has " + std::to_string(all[0].size(0)) +
                        " (shape " + shape(all[0]) + "); every tensor needs the same first dimension (the batch)");
  }
  d.rows = all[0].size(0);
  if (d.rows == 0) throw ConfigError("data file " + path + ": the tensors have 0 rows; expected at least one");
  return d;
}

ScriptData with_dtype(const ScriptData& d, at::ScalarType dtype) {
  auto cast = [dtype](const Payload& p) {
    Payload out;
    for (const at::Tensor& t : p) out.push_back(t.is_floating_point() ? t.to(dtype) : t);
    return out;
  };
  return {cast(d.inputs), cast(d.targets), d.rows};
}

ScriptData data_batch(const ScriptData& d, std::int64_t b, std::int64_t k) {
  if (b < 0 || k < 0)
    throw ConfigError("batch size " + std::to_string(b) + " and batch index " + std::to_string(k) +
                      " must not be negative");
  if (b > d.rows)
    throw ConfigError("batch size " + std::to_string(b) + " exceeds the data's " + std::to_string(d.rows) +
                      " rows; use at most " + std::to_string(d.rows) + " (0 takes the whole data)");
  if (b == 0 || b == d.rows) return d;
  // (k*b) mod rows without overflow for any step count: both factors reduced first.
  const std::int64_t start = (k % d.rows) * b % d.rows;
  const std::int64_t head = std::min(b, d.rows - start);
  const auto slice = [&](const at::Tensor& t) {
    return head == b ? t.narrow(0, start, b) : at::cat({t.narrow(0, start, head), t.narrow(0, 0, b - head)});
  };
  ScriptData out;
  out.rows = b;
  for (const auto& t : d.inputs) out.inputs.push_back(slice(t));
  for (const auto& t : d.targets) out.targets.push_back(slice(t));
  return out;
}

namespace {

void check_single(const std::string& name, const Payload& out, const Payload& tgt) {
  if (out.size() != 1 || tgt.size() != 1)
    throw ShapeError(name + " takes one output and one target tensor, got " + std::to_string(out.size()) + " and " +
                     std::to_string(tgt.size()) + "; a model with several needs a TorchScript loss");
}

// cross_entropy and nll: the class dimension is 1 ([N,C,d...]) or last for [B,T,V] language models.
at::Tensor class_loss(const std::string& name, bool logits, const Payload& out, const Payload& tgt) {
  check_single(name, out, tgt);
  at::Tensor x = out[0];
  at::Tensor t = tgt[0];
  const auto misfit = [&](const std::string& why) {
    return ShapeError(name + ": outputs " + shape(x) + " and targets " + shape(t) + " do not fit: " + why);
  };
  const std::string forms =
      "expected outputs [N,C] or [N,C,d...] with targets [N] or [N,d...], or [B,T,V] with targets [B,T]";
  if (x.dim() < 2) throw misfit(forms);
  // Class probabilities (cross_entropy only), as torch.nn.functional.cross_entropy takes them.
  if (logits && at::isFloatingType(t.scalar_type()) && t.sizes() == x.sizes())
    return at::cross_entropy_loss(x, t.to(x.scalar_type()));
  if (!at::isIntegralType(t.scalar_type(), /*includeBool=*/false))
    throw misfit("class targets must be integers" +
                 std::string(logits ? " (or probabilities shaped as the outputs)" : "") + ", got " +
                 std::string(c10::toString(t.scalar_type())));
  t = t.to(at::kLong);
  std::vector<std::int64_t> without_class = x.sizes().vec();
  without_class.erase(without_class.begin() + 1);
  std::int64_t classes = x.size(1);
  if (x.dim() == 3 && t.sizes() == x.sizes().slice(0, 2)) {
    classes = x.size(2);
    x = x.reshape({-1, classes});
    t = t.reshape({-1});
  } else if (t.sizes() != at::IntArrayRef(without_class)) {
    throw misfit(forms);
  }
  if (t.numel() > 0) {
    const std::int64_t lo = t.min().item<std::int64_t>(), hi = t.max().item<std::int64_t>();
    if (lo < 0 || hi >= classes)
      throw misfit("class " + std::to_string(lo < 0 ? lo : hi) + " is outside [0, " + std::to_string(classes) + ")");
  }
  return logits ? at::cross_entropy_loss(x, t) : at::nll_loss_nd(x, t);
}

at::Tensor mse(const Payload& out, const Payload& tgt) {
  check_single("mse", out, tgt);
  if (out[0].sizes() != tgt[0].sizes())
    throw ShapeError("mse: outputs " + shape(out[0]) + " and targets " + shape(tgt[0]) +
                     " differ in shape; save the targets in the outputs' shape");
  return at::mse_loss(out[0], tgt[0].to(out[0].scalar_type()));
}

// The argument a scripted loss declares: Tensor takes the one tensor, a tuple or list all of them.
c10::IValue as_argument(const Payload& p, const c10::TypePtr& type, const std::string& what, const std::string& where) {
  if (type->kind() == c10::TypeKind::TensorType) {
    if (p.size() != 1)
      throw ShapeError(where + " takes one " + what + " tensor (typed Tensor), got " + std::to_string(p.size()));
    return p[0];
  }
  if (type->kind() == c10::TypeKind::TupleType) {
    const auto n = type->containedTypes().size();
    if (n != p.size())
      throw ShapeError(where + " takes a tuple of " + std::to_string(n) + " " + what + " tensors, got " +
                       std::to_string(p.size()));
    return c10::ivalue::Tuple::create(std::vector<c10::IValue>(p.begin(), p.end()));
  }
  return c10::List<at::Tensor>(p);
}

bool accepted(const c10::TypePtr& t) {
  const auto k = t->kind();
  return k == c10::TypeKind::TensorType || k == c10::TypeKind::TupleType ||
         (k == c10::TypeKind::ListType && t->containedType(0)->kind() == c10::TypeKind::TensorType);
}

}  // namespace

LossFn loss_by_name(const std::string& name) {
  if (name == "cross_entropy")
    return [](const Payload& o, const Payload& t) { return class_loss("cross_entropy", true, o, t); };
  if (name == "nll") return [](const Payload& o, const Payload& t) { return class_loss("nll", false, o, t); };
  if (name == "mse") return mse;
  throw ConfigError("unknown loss '" + name + "'; known losses: cross_entropy, mse, nll");
}

LossFn loss_from_torchscript(const std::string& path, const std::string& method) {
  check_file("loss file", path);
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(path);
  } catch (const c10::Error& e) {
    throw ConfigError("loss file " + path +
                      " is not a TorchScript file (save one with torch.jit.script(m).save): " + first_line(e));
  }
  const auto found = module->find_method(method);
  if (!found) {
    std::string names;
    for (const auto& m : module->get_methods()) names += (names.empty() ? "" : ", ") + m.name();
    throw ConfigError("loss file " + path + " has no method '" + method +
                      "' (it has: " + (names.empty() ? "none" : names) + "); define " + method +
                      "(self, outputs, targets) returning a scalar tensor");
  }
  const auto& args = found->function().getSchema().arguments();
  const std::string where = "loss " + method + " in " + path;
  if (args.size() != 3 || !accepted(args[1].type()) || !accepted(args[2].type())) {
    std::string sig;
    for (std::size_t i = 1; i < args.size(); ++i)
      sig += (i > 1 ? ", " : "") + args[i].name() + ": " + args[i].type()->annotation_str();
    throw ConfigError(where + " takes (" + sig +
                      "); expected (outputs, targets), each a Tensor, a tuple of tensors or List[Tensor]");
  }
  const c10::TypePtr out_type = args[1].type(), tgt_type = args[2].type();
  return [module, method, where, out_type, tgt_type](const Payload& o, const Payload& t) {
    const c10::IValue r = module->get_method(method)(
        {as_argument(o, out_type, "output", where), as_argument(t, tgt_type, "target", where)});
    // A one-element [1] is what .sum(dim, keepdim) gives; PyTorch's backward takes it too.
    if (!r.isTensor() || r.toTensor().numel() != 1)
      throw ShapeError(where + " returned " + (r.isTensor() ? "a tensor " + shape(r.toTensor()) : kind(r)) +
                       ", expected a scalar tensor");
    return r.toTensor().reshape({});
  };
}

}  // namespace tpipe
