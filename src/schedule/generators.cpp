// GPipe, 1F1B and naive schedule generators (see the pictures in generators.h).
#include "tpipe/schedule/generators.h"

#include <algorithm>
#include <fstream>
#include <numeric>

#include "tpipe/error.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/schedule_file.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

void check_sizes(const char* name, int stages, int microbatches) {
  if (stages < 1 || microbatches < 1)
    throw ConfigError(std::string(name) + " schedule needs stages >= 1 and micro-batches >= 1, got " +
                      std::to_string(stages) + " stages and " + std::to_string(microbatches) +
                      " micro-batches");
}

Schedule empty_schedule(std::string name, int stages, int microbatches) {
  Schedule s;
  s.name = std::move(name);
  s.num_microbatches = microbatches;
  s.stage_rank.resize(stages);
  std::iota(s.stage_rank.begin(), s.stage_rank.end(), 0);
  s.ranks.resize(stages);
  return s;
}

}  // namespace

Schedule naive_schedule(int stages, int microbatches) {
  check_sizes("naive", stages, microbatches);
  Schedule s = empty_schedule("naive", stages, microbatches);
  for (int st = 0; st < stages; ++st)
    for (int mb = 0; mb < microbatches; ++mb) {
      s.ranks[st].push_back({st, Op::Forward, mb});
      s.ranks[st].push_back({st, Op::Backward, mb});
    }
  return s;
}

Schedule gpipe_schedule(int stages, int microbatches) {
  check_sizes("gpipe", stages, microbatches);
  Schedule s = empty_schedule("gpipe", stages, microbatches);
  for (int st = 0; st < stages; ++st) {
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[st].push_back({st, Op::Forward, mb});
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[st].push_back({st, Op::Backward, mb});
  }
  return s;
}

Schedule one_f_one_b_schedule(int stages, int microbatches) {
  check_sizes("1f1b", stages, microbatches);
  Schedule s = empty_schedule("1f1b", stages, microbatches);
  for (int st = 0; st < stages; ++st) {
    auto& list = s.ranks[st];
    const int warmup = std::min(stages - 1 - st, microbatches);
    int next_f = 0, next_b = 0;
    while (next_f < warmup) list.push_back({st, Op::Forward, next_f++});
    while (next_f < microbatches) {
      list.push_back({st, Op::Forward, next_f++});
      list.push_back({st, Op::Backward, next_b++});
    }
    while (next_b < microbatches) list.push_back({st, Op::Backward, next_b++});
  }
  return s;
}

// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 3.1): 1F1B's order
// of F and B, with each backward split into B (input gradient, which the previous stage waits
// for) and W (weight gradient, which nobody waits for). Stage s runs the W of micro-batch k
// after the B of micro-batch k + s, so the W's it holds back fill the tail where it would wait
// for the last B's; the rest of its W's drain at the end. F and B keep 1F1B's in-flight limit.
Schedule zb_h1_schedule(int stages, int microbatches) {
  check_sizes("zb-h1", stages, microbatches);
  Schedule s = one_f_one_b_schedule(stages, microbatches);
  s.name = "zb-h1";
  for (int st = 0; st < stages; ++st) {
    std::vector<Action> list;
    for (const Action& a : s.ranks[st]) {
      list.push_back(a);
      if (a.op == Op::Backward && a.mb >= st) list.push_back({st, Op::Weight, a.mb - st});
    }
    for (int mb = std::max(0, microbatches - st); mb < microbatches; ++mb) list.push_back({st, Op::Weight, mb});
    s.ranks[st] = std::move(list);
  }
  return s;
}

Schedule forward_schedule(int stages, int microbatches) {
  check_sizes("forward", stages, microbatches);
  Schedule s = empty_schedule("forward", stages, microbatches);
  s.forward_only = true;
  for (int st = 0; st < stages; ++st)
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[st].push_back({st, Op::Forward, mb});
  Schedule full = insert_comms(s);
  validate(full);
  return full;
}

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names{"naive", "gpipe", "1f1b", "zb-h1"};
  return names;
}

Schedule make_schedule(const std::string& name, int stages, int microbatches) {
  Schedule compute;
  if (name == "naive") {
    compute = naive_schedule(stages, microbatches);
  } else if (name == "gpipe") {
    compute = gpipe_schedule(stages, microbatches);
  } else if (name == "1f1b") {
    compute = one_f_one_b_schedule(stages, microbatches);
  } else if (name == "zb-h1") {
    compute = zb_h1_schedule(stages, microbatches);
  } else if (std::ifstream(name).good()) {
    compute = schedule_from_file(name, stages, microbatches);
  } else {
    std::string known;
    for (const auto& n : schedule_names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("unknown schedule '" + name + "'; known schedules: " + known + ", or a file of actions");
  }
  Schedule full = insert_comms(compute);
  validate(full);
  return full;
}

}  // namespace tpipe
