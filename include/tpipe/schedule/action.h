// One step of a rank's schedule. A schedule is data: per rank, a list of Actions, printed and
// parsed in a compact form so that golden schedules in tests read like the papers' figures.
//
//   2F0          forward of micro-batch 0 on stage 2
//   1B3          backward (input and weight gradients) of micro-batch 3 on stage 1
//   0W5          weight-gradient half of a split backward (zero-bubble schedules)
//   1SEND_F3     stage 1 sends its output activation of micro-batch 3 to stage 2
//   2RECV_F3     stage 2 receives that activation
//   2SEND_B3     stage 2 sends the gradient of its input for micro-batch 3 to stage 1
//   1RECV_B3     stage 1 receives that gradient
//   0REDUCE_TIED / 0REDUCE_DP / 0STEP   end-of-step work of stage 0 (no micro-batch)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tpipe {

enum class Op : std::uint8_t {
  Forward,
  Backward,
  Weight,
  SendAct,
  RecvAct,
  SendGrad,
  RecvGrad,
  ReduceTied,
  ReduceDp,
  OptimizerStep,
};

struct Action {
  int stage = 0;
  Op op = Op::Forward;
  int mb = -1;  // -1 for the end-of-step ops

  friend bool operator==(const Action& a, const Action& b) {
    return a.stage == b.stage && a.op == b.op && a.mb == b.mb;
  }
  friend bool operator!=(const Action& a, const Action& b) { return !(a == b); }
};

inline bool is_compute(Op op) { return op == Op::Forward || op == Op::Backward || op == Op::Weight; }
bool is_comm(Op op);       // SEND_*/RECV_*
bool is_step_end(Op op);   // REDUCE_TIED, REDUCE_DP, STEP
bool has_microbatch(Op op);

std::string to_string(Op op);          // "F", "SEND_F", "REDUCE_DP", ...
std::string to_string(const Action& a);  // "2F0", "1SEND_F3", "0STEP"

// Parses the form printed by to_string; throws ScheduleError naming the text on failure.
Action parse_action(std::string_view text);

}  // namespace tpipe
