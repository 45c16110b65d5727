// Small planner requests whose answers can be worked out by hand, for the planner's tests
// (plan_test.cpp, plan_costs_test.cpp).
#pragma once

#include <string>
#include <vector>

#include "tpipe/plan.h"

namespace tpipe::plan_fixtures {

// Measured on 8 rows: forward 1 ms, backward 2 ms, 1000 weight bytes, 100 activation bytes and
// 10 output bytes per row.
inline LayerFacts layer(const std::string& name, double forward_s = 1e-3, double backward_s = 2e-3) {
  LayerFacts f;
  f.name = name;
  f.parameters = 250;
  f.parameter_bytes = 1000;
  f.rows = 8;
  f.forward_s = forward_s;
  f.backward_s = backward_s;
  f.activation_bytes = 800;
  f.output_bytes = 80;
  return f;
}

inline std::vector<LayerFacts> identical(int n) {
  std::vector<LayerFacts> v;
  for (int i = 0; i < n; ++i) v.push_back(layer("block" + std::to_string(i)));
  return v;
}

inline PlanRequest two_ranks() {
  PlanRequest r;
  r.layers = identical(4);
  r.ranks = 2;
  r.global_batch = 64;
  return r;
}

inline PlanRequest two_ranks_as_one() {
  PlanRequest r = two_ranks();
  r.ranks = 1;
  return r;
}

inline Layout choice(int pp, int dp, int m, const std::string& schedule, const std::string& checkpoint = "never",
                     const std::string& partition = "uniform") {
  Layout l;
  l.pp = pp;
  l.dp = dp;
  l.microbatches = m;
  l.chunks = 0;
  l.schedule = schedule;
  l.checkpoint = checkpoint;
  l.partition_method = partition;
  return l;
}

inline const Layout* find(const std::vector<Layout>& all, int pp, int m, const std::string& schedule,
                          const std::string& checkpoint, const std::string& partition) {
  for (const Layout& l : all)
    if (l.pp == pp && l.microbatches == m && l.schedule == schedule && l.checkpoint == checkpoint &&
        l.partition_method == partition)
      return &l;
  return nullptr;
}

}  // namespace tpipe::plan_fixtures
