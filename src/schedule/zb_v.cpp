// ZB-V (see generators.h): two stages per rank in a V, laid out by a list scheduler.
#include <deque>
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
    fwd_done_.assign(S_, std::vector<int>(m_, -1));
    bwd_done_ = fwd_done_;
    next_f_.assign(S_, 0);
    next_b_.assign(S_, 0);
    inflight_.assign(p_, 0);
    deferred_w_.resize(p_);
  }

  std::vector<std::vector<Action>> run() {
    std::vector<std::vector<Action>> lists(p_);
    for (int left = 3 * S_ * m_, t = 0; left > 0; ++t) {
      bool moved = false;
      for (int r = 0; r < p_; ++r) {
        Action a;
        if (!pick(r, t, a)) continue;
        lists[r].push_back(a);
        record(r, t, a);
        moved = true;
        --left;
      }
      if (!moved) throw ScheduleError("zb-v: the list scheduler stalled at time " + std::to_string(t) + " for p = " +
                                      std::to_string(p_) + ", m = " + std::to_string(m_));
    }
    return lists;
  }

 private:
  // Whether something that ends at `end` is usable at time t (actions started at t end at t+1).
  static bool by(int end, int t) { return end >= 0 && end <= t; }

  bool forward_ready(int st, int t) const {
    const int mb = next_f_[st];
    return mb < m_ && (st == 0 || by(fwd_done_[st - 1][mb], t));
  }
  bool backward_ready(int st, int t) const {
    const int mb = next_b_[st];
    return mb < m_ && by(fwd_done_[st][mb], t) && (st == S_ - 1 || by(bwd_done_[st + 1][mb], t));
  }

  bool pick(int r, int t, Action& a) const {
    const int c0 = r, c1 = S_ - 1 - r;
    const auto& w = deferred_w_[r];
    if (static_cast<int>(w.size()) >= 2 * p_) return a = w.front(), true;
    const bool b0 = backward_ready(c0, t), b1 = backward_ready(c1, t);
    if (b0 || b1) {
      const int st = b0 && b1 ? (next_b_[c0] < next_b_[c1] ? c0 : c1) : (b0 ? c0 : c1);
      return a = {st, Op::Backward, next_b_[st]}, true;
    }
    if (forward_ready(c1, t) && inflight_[r] + 1 <= 2 * p_) return a = {c1, Op::Forward, next_f_[c1]}, true;
    if (forward_ready(c0, t) && inflight_[r] + 1 <= 2 * p_ - 1) return a = {c0, Op::Forward, next_f_[c0]}, true;
    if (!w.empty()) return a = w.front(), true;
    return false;
  }

  void record(int r, int t, const Action& a) {
    switch (a.op) {
      case Op::Forward:
        fwd_done_[a.stage][a.mb] = t + 1, ++next_f_[a.stage], ++inflight_[r];
        break;
      case Op::Backward:
        bwd_done_[a.stage][a.mb] = t + 1, ++next_b_[a.stage], --inflight_[r];
        deferred_w_[r].push_back({a.stage, Op::Weight, a.mb});
        break;
      default:
        deferred_w_[r].pop_front();
    }
  }

  int p_, m_, S_;
  std::vector<std::vector<int>> fwd_done_, bwd_done_;  // [stage][mb] -> end time, -1 before
  std::vector<int> next_f_, next_b_;                   // per stage: next micro-batch
  std::vector<int> inflight_;                          // per rank: F done, B not yet
  std::vector<std::deque<Action>> deferred_w_;         // per rank: B done, W not yet
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
