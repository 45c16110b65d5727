// Private to src/comm: what a Group holds.
#pragma once

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
};

}  // namespace tpipe
