// Gradient reductions, global norm, tie audit (see reducer.h).
#include "reducer.h"

#include <ATen/ATen.h>

#include "tpipe/error.h"

namespace tpipe {
namespace {

at::Tensor& grad_of(const at::Tensor& p) {
  at::Tensor& g = const_cast<at::Tensor&>(p).mutable_grad();
  if (!g.defined()) g = at::zeros_like(p);  // an unused parameter contributes zeros
  return g;
}

// FNV-1a over the bytes of the tensors: equal checksums mean bitwise-equal copies.
std::int64_t checksum(const std::vector<at::Tensor>& tensors) {
  std::uint64_t h = 1469598103934665603ull;
  for (const auto& t : tensors) {
    const at::Tensor c = t.detach().contiguous();
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    for (std::size_t i = 0; i < c.nbytes(); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  }
  return static_cast<std::int64_t>(h);
}

}  // namespace

GradReducer::GradReducer(std::vector<TiedParams> tied, std::vector<at::Tensor> params, Group* dp_group,
                         std::int64_t bucket_bytes)
    : tied_(std::move(tied)), params_(std::move(params)), dp_group_(dp_group), bucket_bytes_(bucket_bytes) {}

void GradReducer::broadcast_initial() {
  at::NoGradGuard no_grad;
  if (dp_group_ && dp_group_->size() > 1)
    for (auto& p : params_) {
      std::vector<at::Tensor> one{p.detach()};
      dp_group_->broadcast(one, 0, "initial broadcast of the weights");
    }
  for (auto& t : tied_)
    for (auto& p : t.params) {
      std::vector<at::Tensor> one{p.detach()};
      t.group->broadcast(one, 0, "initial broadcast of tied weight '" + t.key + "'");
    }
}

void GradReducer::start(const std::vector<at::Tensor>& params, Group* group, const std::string& what) {
  if (!group || group->size() == 1) return;
  std::size_t i = 0;
  while (i < params.size()) {
    Bucket b;
    std::int64_t bytes = 0;
    const auto dtype = params[i].scalar_type();
    while (i < params.size() && params[i].scalar_type() == dtype && (b.params.empty() || bytes < bucket_bytes_)) {
      bytes += static_cast<std::int64_t>(params[i].nbytes());
      b.params.push_back(params[i++]);
    }
    std::vector<at::Tensor> views;
    for (auto& p : b.params) views.push_back(grad_of(p).reshape(-1));
    std::vector<at::Tensor> flat{at::cat(views)};
    b.flat = flat[0];
    b.op = group->all_reduce_sum_async(flat, what);
    pending_.push_back(std::move(b));
  }
}

void GradReducer::start_tied() {
  for (auto& t : tied_) start(t.params, t.group, "sum of tied weight '" + t.key + "' gradients");
}

void GradReducer::start_dp() { start(params_, dp_group_, "data-parallel gradient reduction"); }

void GradReducer::finish() {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& b : pending) {
    b.op.wait();
    std::int64_t offset = 0;
    for (auto& p : b.params) {
      at::Tensor& g = grad_of(p);
      g.copy_(b.flat.narrow(0, offset, g.numel()).view(g.sizes()));
      offset += g.numel();
    }
  }
}

double GradReducer::local_squared_norm() const {
  double sum = 0;
  auto add = [&](const at::Tensor& p) {
    if (!p.grad().defined()) return;
    const double n = p.grad().norm().item<double>();  // in the gradient's dtype, as clip_grad_norm_
    sum += n * n;
  };
  for (const auto& p : params_) add(p);
  for (const auto& t : tied_)
    if (t.counts_for_norm)
      for (const auto& p : t.params) add(p);
  return sum;
}

void GradReducer::scale_gradients(double factor) {
  at::NoGradGuard no_grad;
  auto scale = [&](const at::Tensor& p) {
    if (p.grad().defined()) const_cast<at::Tensor&>(p).mutable_grad().mul_(factor);
  };
  for (const auto& p : params_) scale(p);
  for (const auto& t : tied_)
    for (const auto& p : t.params) scale(p);
}

void GradReducer::audit_ties(const Where& here, const std::function<std::string(int rank)>& copy) const {
  for (const auto& t : tied_) {
    const auto sums = t.group->all_gather(checksum(t.params), "audit of tied weight '" + t.key + "'");
    std::string differ;
    for (std::size_t i = 1; i < sums.size(); ++i)
      if (sums[i] != sums[0]) differ += (differ.empty() ? "" : ", ") + copy(t.group->ranks()[i]);
    if (!differ.empty())
      throw Error(here.prefix() + "tied weight '" + t.key + "' has drifted: the copy on " + differ +
                  " differs from the copy on " + copy(t.group->ranks()[0]));
  }
}

}  // namespace tpipe
