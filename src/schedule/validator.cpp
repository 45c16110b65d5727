// Structural checks of a schedule (see validator.h); deadlock freedom is proven by simulate().
#include "tpipe/schedule/validator.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "tpipe/error.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/grid.h"
#include "tpipe/schedule/simulator.h"
#include "tpipe/schedule/step_end.h"

namespace tpipe {
namespace {

using Key = std::tuple<int, Op, int>;  // stage, op, mb
struct Pos {
  int rank;
  int index;
};

Key key(const Action& a) { return {a.stage, a.op, a.mb}; }

class Checker {
 public:
  explicit Checker(const Schedule& s) : s_(s) {}

  void run() {
    check_shape();
    index_actions();
    for (int st = 0; st < s_.num_stages(); ++st)
      for (int mb = 0; mb < s_.num_microbatches; ++mb) check_microbatch(st, mb);
    check_comms_are_matched();
    check_step_end();
  }

 private:
  [[noreturn]] void fail(const std::string& what, std::vector<std::pair<int, int>> marks) const {
    throw ScheduleError("invalid " + (s_.name.empty() ? std::string("schedule") : s_.name + " schedule") +
                        ": " + what + "\n" + render_grid(s_, marks));
  }
  [[noreturn]] void fail_at(const Pos& p, const std::string& what) const {
    fail("rank " + std::to_string(p.rank) + ": " + what, {{p.rank, p.index}});
  }

  void check_shape() const {
    if (s_.num_microbatches < 1 || s_.num_stages() < 1 || s_.num_ranks() < 1)
      fail("needs at least one stage, rank and micro-batch", {});
    for (int st = 0; st < s_.num_stages(); ++st)
      if (s_.rank_of(st) < 0 || s_.rank_of(st) >= s_.num_ranks())
        fail("stage " + std::to_string(st) + " is placed on rank " + std::to_string(s_.rank_of(st)) +
                 ", but there are " + std::to_string(s_.num_ranks()) + " ranks", {});
    for (const auto& group : s_.tied_stages)
      for (int st : group)
        if (st < 0 || st >= s_.num_stages())
          fail("a tied group names stage " + std::to_string(st) + ", but there are " +
                   std::to_string(s_.num_stages()) + " stages", {});
  }

  void index_actions() {
    for (int r = 0; r < s_.num_ranks(); ++r) {
      const auto& list = s_.ranks[r];
      for (int i = 0; i < static_cast<int>(list.size()); ++i) {
        const Action& a = list[i];
        const Pos p{r, i};
        const std::string name = to_string(a);
        if (a.stage < 0 || a.stage >= s_.num_stages())
          fail_at(p, name + " names stage " + std::to_string(a.stage) + ", but there are " +
                         std::to_string(s_.num_stages()) + " stages");
        if (s_.rank_of(a.stage) != r)
          fail_at(p, name + " is listed on rank " + std::to_string(r) + ", but stage " +
                         std::to_string(a.stage) + " lives on rank " + std::to_string(s_.rank_of(a.stage)));
        if (has_microbatch(a.op) && (a.mb < 0 || a.mb >= s_.num_microbatches))
          fail_at(p, name + " names micro-batch " + std::to_string(a.mb) + ", but there are " +
                         std::to_string(s_.num_microbatches));
        if (a.op == Op::Weight) split_.insert(a.stage);
        auto [it, fresh] = pos_.emplace(key(a), p);
        if (!fresh) fail("rank " + std::to_string(r) + ": " + name + " is repeated", {{it->second.rank, it->second.index}, {r, i}});
      }
    }
  }

  const Pos* find(int stage, Op op, int mb) const {
    auto it = pos_.find({stage, op, mb});
    return it == pos_.end() ? nullptr : &it->second;
  }

  bool splits_backward(int stage) const { return split_.count(stage) > 0; }

  bool cross_rank(int a, int b) const { return s_.rank_of(a) != s_.rank_of(b); }

  void require_before(const Pos* first, const Pos& then, const std::string& first_name,
                      const std::string& then_name) const {
    if (!first) fail_at(then, then_name + " needs " + first_name + ", which is missing");
    if (first->rank == then.rank && first->index > then.index)
      fail_at(then, then_name + " comes before " + first_name);
  }

  void check_microbatch(int st, int mb) const {
    const Action f{st, Op::Forward, mb}, b{st, Op::Backward, mb};
    const Pos* pf = find(st, Op::Forward, mb);
    const Pos* pb = find(st, Op::Backward, mb);
    const int owner = s_.rank_of(st);
    if (!pf) fail("rank " + std::to_string(owner) + ": forward " + to_string(f) + " is missing", {});
    const int last = s_.num_stages() - 1;
    if (s_.forward_only) {
      if (pb) fail_at(*pb, to_string(b) + " in a forward-only schedule");
      if (st > 0 && cross_rank(st - 1, st))
        require_before(find(st, Op::RecvAct, mb), *pf, to_string(Action{st, Op::RecvAct, mb}), to_string(f));
      if (st < last && cross_rank(st, st + 1) && !find(st, Op::SendAct, mb))
        fail_at(*pf, to_string(f) + " has no " + to_string(Action{st, Op::SendAct, mb}));
      return;
    }
    if (!pb) fail("rank " + std::to_string(owner) + ": backward " + to_string(b) + " is missing", {});
    require_before(pf, *pb, "its forward " + to_string(f), to_string(b));
    if (const Pos* pw = find(st, Op::Weight, mb))
      require_before(pb, *pw, to_string(b), to_string(Action{st, Op::Weight, mb}));
    else if (splits_backward(st))
      fail_at(*pb, to_string(b) + " has no " + to_string(Action{st, Op::Weight, mb}) + ": stage " +
                       std::to_string(st) + " splits its backwards, so every micro-batch needs its W");
    if (st > 0) {  // input comes from stage st-1
      if (cross_rank(st - 1, st)) {
        const Action recv{st, Op::RecvAct, mb};
        require_before(find(st, Op::RecvAct, mb), *pf, to_string(recv), to_string(f));
      } else {
        require_before(find(st - 1, Op::Forward, mb), *pf, to_string(Action{st - 1, Op::Forward, mb}), to_string(f));
      }
    }
    if (st < last) {  // output gradient comes from stage st+1
      if (cross_rank(st + 1, st)) {
        const Action recv{st, Op::RecvGrad, mb};
        require_before(find(st, Op::RecvGrad, mb), *pb, to_string(recv), to_string(b));
      } else {
        require_before(find(st + 1, Op::Backward, mb), *pb, to_string(Action{st + 1, Op::Backward, mb}), to_string(b));
      }
    }
    // Sends follow the computation that produces what they send.
    if (st < last && cross_rank(st, st + 1)) {
      const Action send{st, Op::SendAct, mb};
      const Pos* ps = find(st, Op::SendAct, mb);
      if (!ps) fail_at(*pf, to_string(f) + " has no " + to_string(send) + " to stage " + std::to_string(st + 1));
      require_before(pf, *ps, to_string(f), to_string(send));
    }
    if (st > 0 && cross_rank(st, st - 1)) {
      const Action send{st, Op::SendGrad, mb};
      const Pos* ps = find(st, Op::SendGrad, mb);
      if (!ps) fail_at(*pb, to_string(b) + " has no " + to_string(send) + " to stage " + std::to_string(st - 1));
      require_before(pb, *ps, to_string(b), to_string(send));
    }
  }

  void check_comms_are_matched() const {
    for (const auto& [k, p] : pos_) {
      const Action a{std::get<0>(k), std::get<1>(k), std::get<2>(k)};
      if (!is_comm(a.op)) continue;
      const Action peer = matching_comm(a);
      const bool send = a.op == Op::SendAct || a.op == Op::SendGrad;
      if (peer.stage < 0 || peer.stage >= s_.num_stages())
        fail_at(p, to_string(a) + (send ? " sends to" : " receives from") + " stage " +
                       std::to_string(peer.stage) + ", which does not exist");
      if (!cross_rank(a.stage, peer.stage))
        fail_at(p, to_string(a) + " talks to stage " + std::to_string(peer.stage) +
                       " on the same rank; same-rank stages hand tensors over without messages");
      if (!find(peer.stage, peer.op, peer.mb))
        fail_at(p, std::string(send ? "send " : "receive ") + to_string(a) + " has no matching " +
                       to_string(peer) + " on rank " + std::to_string(s_.rank_of(peer.stage)));
    }
  }

  // "stage 1", "stages 0 and 3", "stages 0, 4 and 8": what a rank holds, for messages.
  static std::string stages_text(const std::vector<int>& stages) {
    std::string out = stages.size() == 1 ? "stage " : "stages ";
    for (std::size_t i = 0; i < stages.size(); ++i)
      out += (i == 0 ? "" : i + 1 == stages.size() ? " and " : ", ") + std::to_string(stages[i]);
    return out;
  }

  // End-of-step work is per rank and named by the rank's lowest stage (see step_end.h).
  void check_step_end() const {
    for (const auto& [k, p] : pos_) {
      const Action a{std::get<0>(k), std::get<1>(k), std::get<2>(k)};
      if (!is_step_end(a.op)) continue;
      const std::vector<int> stages = s_.stages_of(p.rank);
      if (a.stage != stages.front())
        fail_at(p, to_string(a) + " is named by stage " + std::to_string(a.stage) + ", but rank " +
                       std::to_string(p.rank) + "'s end of step is named by its lowest stage, " +
                       std::to_string(stages.front()));
      for (int st : stages)
        for (int mb = 0; mb < s_.num_microbatches; ++mb)
          for (Op op : {Op::Backward, Op::Weight})
            if (const Pos* q = find(st, op, mb); q && q->index > p.index)
              fail_at(p, to_string(a) + " comes before " + to_string(Action{st, op, mb}));
      const bool tied = reduces_tied(s_, p.rank);
      const bool one = stages.size() == 1;
      if (a.op == Op::ReduceTied && !tied)
        fail_at(p, to_string(a) + ", but " + stages_text(stages) + (one ? " shares" : " share") +
                       " no weight with " + (one ? "another stage" : "a stage on another rank"));
      if (a.op != Op::OptimizerStep) continue;
      if (tied && !find(a.stage, Op::ReduceTied, -1))
        fail_at(p, to_string(a) + " needs " + to_string(Action{a.stage, Op::ReduceTied, -1}) + ": " +
                       stages_text(stages) + (one ? " shares a weight with other stages"
                                                  : " share a weight with stages on other ranks"));
      for (Op op : {Op::ReduceTied, Op::ReduceDp})
        if (const Pos* q = find(a.stage, op, -1); q && q->index > p.index)
          fail_at(p, to_string(a) + " comes before " + to_string(Action{a.stage, op, -1}));
    }
  }

  const Schedule& s_;
  std::map<Key, Pos> pos_;
  std::set<int> split_;  // stages with W actions
};

}  // namespace

void check_structure(const Schedule& s) { Checker(s).run(); }

void validate(const Schedule& s) { simulate(s, Costs{}); }

}  // namespace tpipe
