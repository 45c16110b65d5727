// ZB-V (see generators.h): two stages per rank in a V, laid out by a list scheduler.
#include <vector>

#include "generator_parts.h"
#include "tpipe/schedule/generators.h"

namespace tpipe {
namespace {

// The list scheduler behind ZB-V. It plays the pipeline forward in unit time steps (F = B = W =
// 1, no latency) and lets every idle rank pick, in this order:
//   1. its oldest deferred W, if 2p W's are waiting (bounds what W keeps alive);
//   2. a B whose gradient has arrived (the older micro-batch first, chunk 1 on a tie): it frees
//      memory and feeds the rank that waits for it;
//   3. a chunk-1 forward (stage 2p-1-r), if in-flight stays <= 2p: it moves a micro-batch
//      towards its backward;
//   4. a chunk-0 forward (stage r), if in-flight stays <= 2p-1: one place stays free for a
//      chunk-1 forward, so a rank can always move the micro-batches it already holds on;
//   5. any deferred W, which fills what would otherwise be a bubble.
// Each stage runs its forwards and its backwards in micro-batch order. Because the lists are
// read off one consistent execution, every data dependency points backwards in time: the
// schedule cannot deadlock under any costs. The greedy itself could stall (no rank able to pick
// anything while work remains) if ranks filled up with chunk-0 forwards; the place rule 4 keeps
// free lets every rank move a micro-batch it holds on to its chunk-1 forward. It throws if it
// ever stalls; the exhaustive test (p <= 8, m <= 16) shows it does not there.
class ZbvBuilder {
 public:
  ZbvBuilder(int p, int m) : p_(p), m_(m), S_(2 * p) {
    next_f_.assign(S_, 0);
    next_b_.assign(S_, 0);
    seen_f_.assign(S_, 0);
    seen_b_.assign(S_, 0);
    inflight_.assign(p_, 0);
    deferred_.assign(p_, 0);
    oldest_b_.assign(p_, 0);
  }

  std::vector<std::vector<Action>> run() {
    lists_.resize(p_);
    for (auto& l : lists_) l.reserve(6 * static_cast<std::size_t>(m_));  // 2 stages x (F, B, W) x m
    std::vector<int> moved;  // ranks that acted in this time step
    for (int left = 3 * S_ * m_, t = 0; left > 0; ++t) {
      moved.clear();
      for (int r = 0; r < p_; ++r) {
        Action a;
        if (!pick(r, a)) continue;
        record(r, a);
        moved.push_back(r);
      }
      if (moved.empty()) throw ScheduleError("zb-v: the list scheduler stalled at time " + std::to_string(t) +
                                             " for p = " + std::to_string(p_) + ", m = " + std::to_string(m_));
      left -= static_cast<int>(moved.size());
      // What started at t ends at t + 1: only now do the other ranks see it.
      for (int r : moved) {
        const Action& a = lists_[r].back();
        if (a.op == Op::Forward) seen_f_[a.stage] = next_f_[a.stage];
        if (a.op == Op::Backward) seen_b_[a.stage] = next_b_[a.stage];
      }
    }
    return std::move(lists_);
  }

 private:
  // Each stage runs its forwards and its backwards in micro-batch order, so "micro-batch mb of
  // stage st is done" is "more than mb of them are", counted up to the previous time step.
  bool forward_ready(int st) const {
    const int mb = next_f_[st];
    return mb < m_ && (st == 0 || mb < seen_f_[st - 1]);
  }
  bool backward_ready(int st) const {
    const int mb = next_b_[st];
    return mb < m_ && mb < seen_f_[st] && (st == S_ - 1 || mb < seen_b_[st + 1]);
  }
  // The oldest deferred W of rank r: its B's run W's in their own order.
  Action oldest_w(int r) const {
    const Action& b = lists_[r][oldest_b_[r]];
    return {b.stage, Op::Weight, b.mb};
  }

  bool pick(int r, Action& a) const {
    const int c0 = r, c1 = S_ - 1 - r;
    if (deferred_[r] >= 2 * p_) return a = oldest_w(r), true;
    const bool b0 = backward_ready(c0), b1 = backward_ready(c1);
    if (b0 || b1) {
      const int st = b0 && b1 ? (next_b_[c0] < next_b_[c1] ? c0 : c1) : (b0 ? c0 : c1);
      return a = {st, Op::Backward, next_b_[st]}, true;
    }
    if (forward_ready(c1) && inflight_[r] + 1 <= 2 * p_) return a = {c1, Op::Forward, next_f_[c1]}, true;
    if (forward_ready(c0) && inflight_[r] + 1 <= 2 * p_ - 1) return a = {c0, Op::Forward, next_f_[c0]}, true;
    if (deferred_[r] > 0) return a = oldest_w(r), true;
    return false;
  }

  void record(int r, const Action& a) {
    auto& list = lists_[r];
    list.push_back(a);
    switch (a.op) {
      case Op::Forward:
        ++next_f_[a.stage], ++inflight_[r];
        break;
      case Op::Backward:
        ++next_b_[a.stage], --inflight_[r];
        if (deferred_[r]++ == 0) oldest_b_[r] = list.size() - 1;
        break;
      default:
        if (--deferred_[r] > 0)
          while (list[++oldest_b_[r]].op != Op::Backward) {
          }
    }
  }

  int p_, m_, S_;
  std::vector<std::vector<Action>> lists_;  // per rank: what it runs, in order
  std::vector<int> next_f_, next_b_;        // per stage: how many forwards / backwards are scheduled
  std::vector<int> seen_f_, seen_b_;        // per stage: how many ended before this time step
  std::vector<int> inflight_;               // per rank: F done, B not yet
  std::vector<int> deferred_;               // per rank: B done, W not yet
  std::vector<std::size_t> oldest_b_;       // per rank: where in its list the B of its oldest deferred W is
};

}  // namespace

Schedule zb_v_schedule(int ranks, int microbatches) {
  detail::check_sizes("zb-v", ranks, microbatches);
  const int p = ranks;
  Schedule s = detail::empty_schedule("zb-v", 2 * p, microbatches);
  for (int st = 0; st < 2 * p; ++st) s.stage_rank[st] = st < p ? st : 2 * p - 1 - st;
  s.ranks = ZbvBuilder(p, microbatches).run();
  return s;
}

}  // namespace tpipe
