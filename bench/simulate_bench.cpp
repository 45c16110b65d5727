// How long planning takes at scale: generate each schedule's compute actions for 1024 stages x
// 8192 micro-batches (interleaved-1f1b: 512 ranks x 2 chunks; zb-v: 512 ranks in a V) and
// simulate them (compute_sim.h), as `tpipe simulate` does (huge_heap.h). Prints, per schedule,
// generation and simulation seconds of the first plan (what a user waits for: fresh memory) and
// the best of three, the actions and the bubble; no LibTorch involved.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "tpipe/schedule/compute_sim.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/util/huge_heap.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


}  // namespace

int main() {
  using tpipe::Costs;
  const int m = 8192;
  struct Case {
    const char* name;
    int ranks, chunks;
  };
  tpipe::reserve_huge_heap(tpipe::compute_schedule_bytes(1024ll * m));  // as tpipe simulate does
  std::printf("planning at scale: %d micro-batches; seconds of the first plan, and the best of 3\n", m);
  std::printf("%-18s %6s %6s %12s %9s %9s %9s %9s %8s\n", "schedule", "ranks", "stages", "actions", "generate",
              "simulate", "first", "best", "bubble");
  for (const Case c : {Case{"gpipe", 1024, 1}, Case{"1f1b", 1024, 1}, Case{"zb-h1", 1024, 1},
                       Case{"interleaved-1f1b", 512, 2}, Case{"zb-v", 512, 2}}) {
    Costs costs;
    if (std::string(c.name) == "zb-h1" || std::string(c.name) == "zb-v") costs.backward = 1;
    double best_gen = 1e9, best_sim = 1e9, first = 0, bubble = 0;
    long long actions = 0;
    for (int round = 0; round < 3; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      const tpipe::Schedule s = tpipe::compute_schedule(c.name, c.ranks, m, c.chunks);
      best_gen = std::min(best_gen, seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      const tpipe::SimResult r = tpipe::simulate_compute(s, costs);
      best_sim = std::min(best_sim, seconds_since(t0));
      if (round == 0) first = best_gen + best_sim;
      bubble = r.bubble;
      actions = 0;
      for (const auto& list : s.ranks) actions += static_cast<long long>(list.size());
    }
    std::printf("%-18s %6d %6d %12lld %9.3f %9.3f %9.3f %9.3f %7.2f%%\n", c.name, c.ranks, c.ranks * c.chunks,
                actions, best_gen, best_sim, first, best_gen + best_sim, 100 * bubble);
  }
  return 0;
}
