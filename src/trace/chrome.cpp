// Chrome / Perfetto trace JSON (see chrome.h).
//
// Flow arrows bind to slices by timestamp: the start to the slice enclosing its ts, the end
// ("bp":"e") to the slice open on the receiver's track at its ts. Perfetto resolves both from
// the slice most recently begun on the track, so among events with equal (pid, ts) a flow or
// counter must follow the slice it belongs to and precede the next one. Events are therefore
// emitted right after their own slice, in each rank's execution order, and sorted stably.
#include "tpipe/trace/chrome.h"

#include <algorithm>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "tpipe/util/files.h"

namespace tpipe::trace {
namespace {

using nlohmann::json;

const char* category(Op op) {
  if (is_compute(op)) return "compute";
  if (is_comm(op)) return "comm";
  if (op == Op::OptimizerStep) return "step";
  return "reduce";
}

// The receive that consumes a send: the next stage's RECV_F for activations, the previous
// stage's RECV_B for gradients.
bool receive_of(const Action& send, Action& recv) {
  if (send.op == Op::SendAct) recv = {send.stage + 1, Op::RecvAct, send.mb};
  else if (send.op == Op::SendGrad) recv = {send.stage - 1, Op::RecvGrad, send.mb};
  else return false;
  return true;
}

struct Flow {
  std::int64_t id;
  bool is_start;
};

// Pairs every send of one step with its receive: event index -> flow end points. A send whose
// receive is missing (or ambiguous, when the peer was not recorded) gets none.
std::map<std::size_t, Flow> match_flows(const StepTrace& t, std::int64_t& next_id) {
  using Key = std::tuple<int, int, int>;  // stage, op, mb
  std::map<Key, std::vector<std::size_t>> recvs;
  for (std::size_t i = 0; i < t.events.size(); ++i) {
    const Action& a = t.events[i].action;
    if (a.op == Op::RecvAct || a.op == Op::RecvGrad)
      recvs[{a.stage, static_cast<int>(a.op), a.mb}].push_back(i);
  }
  std::map<std::size_t, Flow> flows;
  for (std::size_t i = 0; i < t.events.size(); ++i) {
    const Event& e = t.events[i];
    Action want;
    if (!receive_of(e.action, want)) continue;
    auto it = recvs.find({want.stage, static_cast<int>(want.op), want.mb});
    if (it == recvs.end()) continue;
    std::size_t found = 0;
    int candidates = 0;
    for (std::size_t j : it->second)
      if ((e.peer < 0 || t.events[j].rank == e.peer) && !flows.count(j)) {
        found = j;
        ++candidates;
      }
    if (candidates != 1) continue;
    const std::int64_t id = next_id++;
    flows[i] = {id, true};
    flows[found] = {id, false};
  }
  return flows;
}

json slice(const StepTrace& t, const Event& e) {
  json args = {{"step", t.step}, {"stage", e.action.stage}};
  if (e.action.mb >= 0) args["mb"] = e.action.mb;
  if (is_comm(e.action.op)) {
    args["bytes"] = e.bytes;
    args["peer"] = e.peer;
  }
  return {{"ph", "X"},
          {"name", to_string(e.action)},
          {"cat", category(e.action.op)},
          {"pid", e.rank},
          {"tid", 0},
          {"ts", e.start_us},
          {"dur", std::max(0.0, e.end_us - e.start_us)},
          {"args", std::move(args)}};
}

json flow(const Event& e, const Flow& f) {
  const bool activation = e.action.op == Op::SendAct || e.action.op == Op::RecvAct;
  json j = {{"ph", f.is_start ? "s" : "f"},
            {"id", f.id},
            {"name", activation ? "activation" : "gradient"},
            {"cat", "flow"},
            {"pid", e.rank},
            {"tid", 0},
            {"ts", f.is_start ? e.start_us : e.end_us}};
  if (!f.is_start) j["bp"] = "e";
  return j;
}

json metadata(const RankInfo& r) {
  const std::string name = "rank " + std::to_string(r.rank) + " \xC2\xB7 " + stages_label(r) + " \xC2\xB7 replica " +
                           std::to_string(r.replica);
  return json::array(
      {{{"ph", "M"}, {"name", "process_name"}, {"pid", r.rank}, {"tid", 0},
        {"args", {{"name", name}}}},
       {{"ph", "M"}, {"name", "process_sort_index"}, {"pid", r.rank}, {"tid", 0},
        {"args", {{"sort_index", r.rank}}}}});
}

}  // namespace

json chrome_trace(const std::vector<StepTrace>& steps) {
  // The stable sort keeps each rank's execution order among equal timestamps (see the top of
  // the file); metadata carries no ts and goes before everything.
  json events = json::array();
  for (const auto& t : steps)
    if (!t.ranks.empty()) {
      for (const auto& r : t.ranks)
        for (auto& m : metadata(r)) events.push_back(std::move(m));
      break;
    }
  struct Item {
    int pid;
    double ts;
    json event;
  };
  std::vector<Item> items;

  json other = {{"tool", "tpipe"}, {"steps", json::array()}, {"measured_bubble", json::array()}};
  std::int64_t next_flow = 1;
  for (const auto& t : steps) {
    other["steps"].push_back(t.step);
    other["measured_bubble"].push_back(measured_bubble(t).overall);
    const auto flows = match_flows(t, next_flow);
    for (std::size_t i = 0; i < t.events.size(); ++i) {
      const Event& e = t.events[i];
      items.push_back({e.rank, e.start_us, slice(t, e)});
      if (auto it = flows.find(i); it != flows.end()) {
        json f = flow(e, it->second);
        const double ts = f["ts"].get<double>();
        items.push_back({e.rank, ts, std::move(f)});
      }
      auto counter = [&](const char* name, std::int64_t bytes) {
        items.push_back({e.rank, e.end_us,
                         {{"ph", "C"}, {"name", name}, {"pid", e.rank}, {"tid", 0}, {"ts", e.end_us},
                          {"args", {{"bytes", bytes}}}}});
      };
      if (is_compute(e.action.op)) counter("stashed activations", e.stash_bytes);
      // The counting allocator's measure: everything autograd keeps, not only the boundaries.
      if (e.activation_bytes >= 0) counter("activations (measured)", e.activation_bytes);
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return std::tie(a.pid, a.ts) < std::tie(b.pid, b.ts);
  });

  for (auto& item : items) events.push_back(std::move(item.event));
  return {{"traceEvents", std::move(events)},
          {"displayTimeUnit", "ms"},
          {"otherData", std::move(other)}};
}

void write_chrome_trace(const std::string& path, const std::vector<StepTrace>& steps) {
  const json doc = chrome_trace(steps);
  // One event per line keeps large traces greppable and diffable while staying valid JSON.
  std::string out = "{\"displayTimeUnit\":" + doc["displayTimeUnit"].dump() +
                    ",\"otherData\":" + doc["otherData"].dump() + ",\"traceEvents\":[";
  const auto& events = doc["traceEvents"];
  for (std::size_t i = 0; i < events.size(); ++i)
    out += (i == 0 ? "\n" : ",\n") + events[i].dump();
  out += "\n]}\n";
  write_file_atomic(path, out);
}

}  // namespace tpipe::trace
