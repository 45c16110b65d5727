// Private to the schedule generators: what every generator starts from.
#pragma once

#include <numeric>
#include <string>
#include <utility>

#include "tpipe/error.h"
#include "tpipe/schedule/schedule.h"

namespace tpipe::detail {

inline void check_sizes(const char* name, int stages, int microbatches) {
  if (stages < 1 || microbatches < 1)
    throw ConfigError(std::string(name) + " schedule needs stages >= 1 and micro-batches >= 1, got " +
                      std::to_string(stages) + " stages and " + std::to_string(microbatches) +
                      " micro-batches");
}

inline Schedule empty_schedule(std::string name, int stages, int microbatches) {
  Schedule s;
  s.name = std::move(name);
  s.num_microbatches = microbatches;
  s.stage_rank.resize(stages);
  std::iota(s.stage_rank.begin(), s.stage_rank.end(), 0);
  s.ranks.resize(stages);
  return s;
}

}  // namespace tpipe::detail
