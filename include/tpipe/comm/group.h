// A collective group: some ranks of the job with a c10d process group of their own (a pipeline,
// the replicas of one stage, the holders of one tied weight). A group of one rank needs no
// process group: its collectives return at once. Created by Communicator::new_group.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tpipe {

// A collective that was started and is waited on later (wait() throws CommError on failure).
class AsyncOp {
 public:
  struct State;
  AsyncOp() = default;  // already complete
  explicit AsyncOp(std::shared_ptr<State> s) : state_(std::move(s)) {}
  void wait();

 private:
  std::shared_ptr<State> state_;
};

class Group {
 public:
  struct Impl;
  explicit Group(std::unique_ptr<Impl> impl);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  const std::string& name() const;
  const std::vector<int>& ranks() const;  // global ranks, in group order
  int size() const;
  int index() const;  // this rank's position in ranks()

  // In-place sum over the group. `what` names the operation in errors.
  AsyncOp all_reduce_sum_async(std::vector<at::Tensor>& tensors, const std::string& what);
  void all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what);
  // Overwrites the tensors with those of the member at `root_index`.
  void broadcast(std::vector<at::Tensor>& tensors, int root_index, const std::string& what);
  // Every member's value, in group order.
  std::vector<std::int64_t> all_gather(std::int64_t value, const std::string& what);
  std::vector<std::string> all_gather_text(const std::string& text, const std::string& what);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpipe
