// Collective groups over c10d process groups (see group.h).
#include "tpipe/comm/group.h"

#include <algorithm>
#include <cstring>

#include "group_impl.h"

namespace tpipe {

struct AsyncOp::State {
  c10::intrusive_ptr<c10d::Work> work;
  std::chrono::milliseconds timeout;
  Where where;
  std::string what;
  detail::Roll roll;
};

void AsyncOp::wait() {
  if (!state_) return;
  auto s = std::move(state_);
  detail::wait_collective(*s->work, s->timeout, s->where, s->what, s->roll);
}

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;

const std::string& Group::name() const { return impl_->name; }
const std::vector<int>& Group::ranks() const { return impl_->ranks; }
int Group::size() const { return static_cast<int>(impl_->ranks.size()); }
int Group::index() const { return impl_->index; }

AsyncOp Group::all_reduce_sum_async(std::vector<at::Tensor>& tensors, const std::string& what) {
  if (!impl_->pg || tensors.empty()) return AsyncOp();
  auto work = impl_->pg->allreduce(tensors);
  return AsyncOp(std::make_shared<AsyncOp::State>(AsyncOp::State{
      work, impl_->timeout, Where{impl_->global_rank}, what + " in group " + impl_->name, impl_->next_roll()}));
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what) {
  all_reduce_sum_async(tensors, what).wait();
}

void Group::broadcast(std::vector<at::Tensor>& tensors, int root_index, const std::string& what) {
  if (!impl_->pg || tensors.empty()) return;
  c10d::BroadcastOptions o;
  o.rootRank = root_index;
  auto work = impl_->pg->broadcast(tensors, o);
  detail::wait_collective(*work, impl_->timeout, Where{impl_->global_rank}, what + " in group " + impl_->name,
                          impl_->next_roll());
}

std::vector<std::int64_t> Group::all_gather(std::int64_t value, const std::string& what) {
  if (!impl_->pg) return {value};
  std::vector<at::Tensor> in{at::full({1}, value, at::kLong)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int i = 0; i < size(); ++i) out[0].push_back(at::zeros({1}, at::kLong));
  auto work = impl_->pg->allgather(out, in);
  detail::wait_collective(*work, impl_->timeout, Where{impl_->global_rank}, what + " in group " + impl_->name,
                          impl_->next_roll());
  std::vector<std::int64_t> values;
  for (auto& t : out[0]) values.push_back(t.item<std::int64_t>());
  return values;
}

// Lengths first, then every member's bytes in a zero-filled [size, longest] tensor that each
// member fills its own row of: a sum then is a gather.
std::vector<std::string> Group::all_gather_text(const std::string& text, const std::string& what) {
  if (!impl_->pg) return {text};
  const auto lengths = all_gather(static_cast<std::int64_t>(text.size()), what);
  const std::int64_t longest = std::max<std::int64_t>(1, *std::max_element(lengths.begin(), lengths.end()));
  std::vector<at::Tensor> rows{at::zeros({size(), longest}, at::kByte)};
  if (!text.empty()) std::memcpy(rows[0][index()].data_ptr(), text.data(), text.size());
  all_reduce_sum(rows, what);
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i)
    out.emplace_back(static_cast<const char*>(rows[0][i].data_ptr()), static_cast<std::size_t>(lengths[i]));
  return out;
}

}  // namespace tpipe
