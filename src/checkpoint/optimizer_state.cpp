// Optimizer state by parameter name (see optimizer_state.h). Each supported optimizer is a list
// of fields: required ones must all be present on load, optional ones (AMSGrad's maximum,
// RMSprop's momentum) only when the options use them.
#include "optimizer_state.h"

#include <c10/util/string_utils.h>
#include <torch/optim.h>

#include <functional>

#include "tpipe/checkpoint/manifest.h"
#include "tpipe/error.h"

namespace tpipe::checkpoint {
namespace {

template <class State>
struct Field {
  const char* name;
  bool required;
  std::function<at::Tensor(const State&)> get;
  std::function<void(State&, const at::Tensor&)> set;
};

// A tensor field of the state, copied on the way in so the optimizer owns its memory.
#define TPIPE_TENSOR_FIELD(State, f, req) \
  Field<State> { #f, req, [](const State& s) { return s.f(); }, [](State& s, const at::Tensor& t) { s.f(t.clone()); } }
#define TPIPE_STEP_FIELD(State)                                                                         \
  Field<State> {                                                                                        \
    "step", true, [](const State& s) { return at::scalar_tensor(s.step(), at::kLong); },                \
        [](State& s, const at::Tensor& t) { s.step(t.item<std::int64_t>()); }                            \
  }

template <class State>
const std::vector<Field<State>>& fields();

template <>
const std::vector<Field<torch::optim::SGDParamState>>& fields() {
  using S = torch::optim::SGDParamState;
  static const std::vector<Field<S>> f{TPIPE_TENSOR_FIELD(S, momentum_buffer, true)};
  return f;
}
// Adam and AdamW keep the same state under two type names.
template <class S>
std::vector<Field<S>> adam_fields() {
  return {TPIPE_STEP_FIELD(S), TPIPE_TENSOR_FIELD(S, exp_avg, true), TPIPE_TENSOR_FIELD(S, exp_avg_sq, true),
          TPIPE_TENSOR_FIELD(S, max_exp_avg_sq, false)};
}
template <>
const std::vector<Field<torch::optim::AdamParamState>>& fields() {
  static const auto f = adam_fields<torch::optim::AdamParamState>();
  return f;
}
template <>
const std::vector<Field<torch::optim::AdamWParamState>>& fields() {
  static const auto f = adam_fields<torch::optim::AdamWParamState>();
  return f;
}
template <>
const std::vector<Field<torch::optim::AdagradParamState>>& fields() {
  using S = torch::optim::AdagradParamState;
  static const std::vector<Field<S>> f{TPIPE_STEP_FIELD(S), TPIPE_TENSOR_FIELD(S, sum, true)};
  return f;
}
template <>
const std::vector<Field<torch::optim::RMSpropParamState>>& fields() {
  using S = torch::optim::RMSpropParamState;
  static const std::vector<Field<S>> f{TPIPE_STEP_FIELD(S), TPIPE_TENSOR_FIELD(S, square_avg, true),
                                       TPIPE_TENSOR_FIELD(S, momentum_buffer, false),
                                       TPIPE_TENSOR_FIELD(S, grad_avg, false)};
  return f;
}
#undef TPIPE_TENSOR_FIELD
#undef TPIPE_STEP_FIELD

std::string key_of(const at::Tensor& param) { return c10::guts::to_string(param.unsafeGetTensorImpl()); }

// "Float [4]", as the manifest describes tensors.
std::string describe(const at::Tensor& t) {
  return checkpoint::describe(TensorInfo{"", t.sizes().vec(), c10::toString(t.scalar_type())});
}

template <class State>
NamedTensors state_of(const torch::optim::Optimizer& opt, const at::Tensor& param, const std::string& prefix) {
  NamedTensors out;
  auto it = opt.state().find(key_of(param));
  if (it == opt.state().end()) return out;
  const auto& s = static_cast<const State&>(*it->second);
  for (const auto& f : fields<State>()) {
    at::Tensor t = f.get(s);
    if (t.defined()) out.emplace_back(prefix + f.name, t);
  }
  return out;
}

template <class State>
std::string check(const at::Tensor& param, const std::map<std::string, at::Tensor>& given) {
  std::size_t known = 0;
  for (const auto& f : fields<State>()) {
    auto it = given.find(f.name);
    if (it == given.end()) {
      if (f.required) return std::string("its ") + f.name + " is missing";
      continue;
    }
    ++known;
    const at::Tensor& t = it->second;
    const bool is_step = std::string(f.name) == "step";
    const bool ok = is_step ? (t.numel() == 1 && t.scalar_type() == at::kLong)
                            : (t.sizes() == param.sizes() && t.scalar_type() == param.scalar_type());
    if (!ok)
      return std::string("its ") + f.name + " is " + describe(t) + ", the parameter " +
             (is_step ? std::string("needs Long []") : "is " + describe(param));
  }
  if (known != given.size()) {
    for (const auto& [name, t] : given) {
      bool found = false;
      for (const auto& f : fields<State>()) found = found || name == f.name;
      if (!found) return "it has a field '" + name + "' that this optimizer does not have";
    }
  }
  return "";
}

// The options of the parameter group holding `param`.
const torch::optim::OptimizerOptions* options_of(const torch::optim::Optimizer& opt, const at::Tensor& param) {
  for (const auto& g : opt.param_groups())
    for (const auto& p : g.params())
      if (p.unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) return &g.options();
  return nullptr;
}

// Whether these options use an optional field: AMSGrad's maximum, RMSprop's momentum buffer and
// (centered) gradient average. LibTorch creates them as zeros with the state; so does a load.
bool uses(const torch::optim::OptimizerOptions* o, const std::string& field) {
  if (!o) return false;
  if (field == "max_exp_avg_sq") {
    if (auto* a = dynamic_cast<const torch::optim::AdamOptions*>(o)) return a->amsgrad();
    if (auto* a = dynamic_cast<const torch::optim::AdamWOptions*>(o)) return a->amsgrad();
  }
  if (auto* r = dynamic_cast<const torch::optim::RMSpropOptions*>(o)) {
    if (field == "momentum_buffer") return r->momentum() > 0;
    if (field == "grad_avg") return r->centered();
  }
  return false;
}

template <class State>
void set_state(torch::optim::Optimizer& opt, const at::Tensor& param, const std::map<std::string, at::Tensor>& given) {
  auto s = std::make_unique<State>();
  const auto* options = options_of(opt, param);
  for (const auto& f : fields<State>())
    if (auto it = given.find(f.name); it != given.end())
      f.set(*s, it->second);
    else if (!f.required && uses(options, f.name))
      f.set(*s, at::zeros_like(param));
  opt.state()[key_of(param)] = std::move(s);
}

// Calls visit.template operator()<State>() with the state type of the optimizer kind.
template <class Visit>
auto with_state_type(const std::string& kind, Visit&& visit) {
  if (kind == "SGD") return visit(torch::optim::SGDParamState{});
  if (kind == "Adam") return visit(torch::optim::AdamParamState{});
  if (kind == "AdamW") return visit(torch::optim::AdamWParamState{});
  if (kind == "Adagrad") return visit(torch::optim::AdagradParamState{});
  if (kind == "RMSprop") return visit(torch::optim::RMSpropParamState{});
  throw ConfigError("unknown optimizer kind '" + kind + "' in a checkpoint");
}

}  // namespace

std::string optimizer_kind(const torch::optim::Optimizer* opt) {
  if (!opt) return "";
  if (dynamic_cast<const torch::optim::SGD*>(opt)) return "SGD";
  if (dynamic_cast<const torch::optim::AdamW*>(opt)) return "AdamW";
  if (dynamic_cast<const torch::optim::Adam*>(opt)) return "Adam";
  if (dynamic_cast<const torch::optim::Adagrad*>(opt)) return "Adagrad";
  if (dynamic_cast<const torch::optim::RMSprop*>(opt)) return "RMSprop";
  throw ConfigError("checkpoints support the optimizers SGD, Adam, AdamW, Adagrad and RMSprop; this engine's "
                    "optimizer is another (LBFGS or your own), whose state cannot be saved by parameter name");
}

NamedTensors optimizer_state(const torch::optim::Optimizer& opt, const at::Tensor& param, const std::string& prefix) {
  return with_state_type(optimizer_kind(&opt),
                         [&](auto s) { return state_of<decltype(s)>(opt, param, prefix); });
}

std::string check_optimizer_state(const std::string& kind, const at::Tensor& param,
                                  const std::map<std::string, at::Tensor>& fields) {
  if (fields.empty()) return "";
  return with_state_type(kind, [&](auto s) { return check<decltype(s)>(param, fields); });
}

void set_optimizer_state(torch::optim::Optimizer& opt, const at::Tensor& param,
                         const std::map<std::string, at::Tensor>& fields) {
  if (fields.empty()) {
    opt.state().erase(key_of(param));
    return;
  }
  with_state_type(optimizer_kind(&opt), [&](auto s) {
    set_state<decltype(s)>(opt, param, fields);
    return 0;
  });
}

}  // namespace tpipe::checkpoint
