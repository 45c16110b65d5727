// Measured bubble and plan-as-trace (see record.h).
#include "tpipe/trace/record.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "tpipe/schedule/comm_pass.h"

namespace tpipe::trace {

double StepTrace::start_us() const {
  double t = std::numeric_limits<double>::infinity();
  for (const auto& e : events) t = std::min(t, e.start_us);
  return events.empty() ? 0.0 : t;
}

double StepTrace::end_us() const {
  double t = -std::numeric_limits<double>::infinity();
  for (const auto& e : events) t = std::max(t, e.end_us);
  return events.empty() ? 0.0 : t;
}

Bubble measured_bubble(const StepTrace& t) {
  Bubble b;
  const double span = t.end_us() - t.start_us();
  std::vector<double> busy(t.ranks.size(), 0.0);
  for (const auto& e : t.events)
    if (is_compute(e.action.op) && e.rank >= 0 && e.rank < static_cast<int>(busy.size()))
      busy[e.rank] += e.end_us - e.start_us;
  double total = 0;
  for (double x : busy) {
    b.per_rank.push_back(span > 0 ? 1.0 - x / span : 0.0);
    total += x;
  }
  b.overall = span > 0 && !busy.empty() ? 1.0 - total / (span * static_cast<double>(busy.size())) : 0.0;
  return b;
}

MeasuredMemory measured_memory(const StepTrace& t) {
  MeasuredMemory m;
  const std::size_t n = t.ranks.size();
  std::vector<std::int64_t> act(n, -1), mem(n, -1);
  bool any = false;
  for (const auto& e : t.events) {
    if (e.rank < 0 || e.rank >= static_cast<int>(n)) continue;
    act[e.rank] = std::max(act[e.rank], e.activation_bytes);
    mem[e.rank] = std::max(mem[e.rank], e.memory_bytes);
    any = any || e.activation_bytes >= 0 || e.memory_bytes >= 0;
  }
  if (!any) return m;
  for (std::size_t r = 0; r < n; ++r) {
    m.activation_peak_bytes.push_back(std::max<std::int64_t>(act[r], 0));
    m.memory_peak_bytes.push_back(std::max<std::int64_t>(mem[r], 0));
  }
  return m;
}

std::string stages_label(const std::vector<int>& stages) {
  std::string text = stages.size() == 1 ? "stage " : "stages ";
  for (std::size_t i = 0; i < stages.size(); ++i) text += (i ? "," : "") + std::to_string(stages[i]);
  return text;
}

StepTrace from_simulation(const Schedule& s, const SimResult& r, double unit_us) {
  StepTrace t;
  for (int rank = 0; rank < s.num_ranks(); ++rank) t.ranks.push_back({rank, s.stages_of(rank), 0});
  // A receive is posted early in the plan; as in a measured trace it is drawn where the data
  // arrives: at the end of the matching send (never before its own posting).
  std::map<std::tuple<int, Op, int>, double> send_end;
  for (const auto& row : r.timeline)
    for (const auto& ta : row)
      if (ta.action.op == Op::SendAct || ta.action.op == Op::SendGrad)
        send_end[{ta.action.stage, ta.action.op, ta.action.mb}] = ta.end;
  for (int rank = 0; rank < static_cast<int>(r.timeline.size()); ++rank)
    for (const auto& ta : r.timeline[rank]) {
      Event e;
      e.rank = rank;
      e.action = ta.action;
      e.start_us = ta.start * unit_us;
      e.end_us = ta.end * unit_us;
      if (is_comm(ta.action.op)) e.peer = comm_peer(s, ta.action);
      if (ta.action.op == Op::RecvAct || ta.action.op == Op::RecvGrad) {
        const Action send = matching_comm(ta.action);
        auto it = send_end.find({send.stage, send.op, send.mb});
        if (it != send_end.end()) e.start_us = e.end_us = std::max(ta.end, it->second) * unit_us;
      }
      t.events.push_back(e);
    }
  return t;
}

}  // namespace tpipe::trace
