// Private to src/comm: what a Group holds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tpipe/comm/group.h"
#include "work.h"

namespace tpipe {

struct Group::Impl {
  std::string name;
  std::vector<int> ranks;
  int index = 0;
  int global_rank = 0;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::ProcessGroup> pg;  // null for a group of one
  c10::intrusive_ptr<c10d::Store> roll;        // who arrived at which collective (work.h)
  std::int64_t calls = 0;                      // collectives started, the same count on every member
  c10::intrusive_ptr<c10d::Store> hosts;       // see detail::Roll
  int world = 0;

  // The roll of the next collective; members call collectives in one order, so the count is
  // the same on each.
  detail::Roll next_roll() { return {roll, std::to_string(++calls) + "/", ranks, global_rank, hosts, world}; }
};

}  // namespace tpipe
