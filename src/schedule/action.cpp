// Printing and parsing of Actions ("2F0", "1SEND_F3", "0STEP").
#include "tpipe/schedule/action.h"

#include <array>
#include <cctype>
#include <sstream>
#include <utility>

#include "tpipe/error.h"
#include "tpipe/schedule/schedule.h"

namespace tpipe {
namespace {

// Longest names first so that parsing "SEND_F" is not taken for "F".
constexpr std::array<std::pair<Op, const char*>, 10> kNames{{
    {Op::ReduceTied, "REDUCE_TIED"},
    {Op::ReduceDp, "REDUCE_DP"},
    {Op::SendAct, "SEND_F"},
    {Op::RecvAct, "RECV_F"},
    {Op::SendGrad, "SEND_B"},
    {Op::RecvGrad, "RECV_B"},
    {Op::OptimizerStep, "STEP"},
    {Op::Forward, "F"},
    {Op::Backward, "B"},
    {Op::Weight, "W"},
}};

bool parse_int(std::string_view s, int& out) {
  if (s.empty() || s.size() > 9) return false;
  out = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    out = out * 10 + (c - '0');
  }
  return true;
}

}  // namespace


bool is_comm(Op op) {
  return op == Op::SendAct || op == Op::RecvAct || op == Op::SendGrad || op == Op::RecvGrad;
}

bool is_step_end(Op op) {
  return op == Op::ReduceTied || op == Op::ReduceDp || op == Op::OptimizerStep;
}

bool has_microbatch(Op op) { return !is_step_end(op); }

std::string to_string(Op op) {
  for (const auto& [o, name] : kNames)
    if (o == op) return name;
  return "?";
}

std::string to_string(const Action& a) {
  std::string s = std::to_string(a.stage) + to_string(a.op);
  if (has_microbatch(a.op)) s += std::to_string(a.mb);
  return s;
}

Action parse_action(std::string_view text) {
  auto fail = [&]() -> Action {
    throw ScheduleError("cannot parse action '" + std::string(text) +
                        "': expected STAGE OP [MB] such as 2F0, 1B3, 0SEND_F1, 1RECV_B0, 0STEP");
  };
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  Action a;
  if (!parse_int(text.substr(0, i), a.stage)) return fail();
  std::string_view rest = text.substr(i);
  for (const auto& [op, name] : kNames) {
    std::string_view n(name);
    if (rest.substr(0, n.size()) != n) continue;
    a.op = op;
    std::string_view mb = rest.substr(n.size());
    if (has_microbatch(op)) {
      if (!parse_int(mb, a.mb)) return fail();
    } else if (!mb.empty()) {
      return fail();
    }
    return a;
  }
  return fail();
}

std::vector<int> Schedule::stages_of(int rank) const {
  std::vector<int> out;
  for (int st = 0; st < num_stages(); ++st)
    if (stage_rank[st] == rank) out.push_back(st);
  return out;
}

int Schedule::chunk_of(int stage) const {
  const int rank = rank_of(stage);
  int chunk = 0;
  for (int st = 0; st < stage; ++st) chunk += stage_rank[st] == rank;
  return chunk;
}

std::vector<Action> Schedule::compute_actions(int rank) const {
  std::vector<Action> out;
  for (const Action& a : ranks.at(rank))
    if (is_compute(a.op)) out.push_back(a);
  return out;
}

std::string to_string(const std::vector<Action>& actions) {
  std::string s;
  for (const Action& a : actions) s += (s.empty() ? "" : " ") + to_string(a);
  return s;
}

std::vector<Action> parse_actions(const std::string& text) {
  std::istringstream in(text);
  std::vector<Action> out;
  for (std::string tok; in >> tok;) out.push_back(parse_action(tok));
  return out;
}

}  // namespace tpipe
