// Uniform, explicit and balanced partitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tpipe/error.h"
#include "tpipe/partition.h"

namespace tpipe {
namespace {

TEST(Partition, UniformPutsTheRemainderFirst) {
  EXPECT_EQ(to_string(partition_uniform(8, 3)), "3,3,2");
  EXPECT_EQ(to_string(partition_uniform(8, 4)), "2,2,2,2");
  EXPECT_EQ(to_string(partition_uniform(5, 1)), "5");
  EXPECT_EQ(partition_uniform(8, 3).bounds, (std::vector<int>{0, 3, 6, 8}));
  EXPECT_EQ(partition_uniform(8, 3).stage_of(5), 1);
  EXPECT_EQ(partition_uniform(8, 3).stage_of(6), 2);
}

TEST(Partition, ExplicitAndFromString) {
  EXPECT_EQ(partition_from_string("1,4,3", 8, 3).bounds, (std::vector<int>{0, 1, 5, 8}));
  EXPECT_EQ(partition_from_string("uniform", 7, 2).bounds, (std::vector<int>{0, 4, 7}));
}

TEST(Partition, BadInputSaysWhat) {
  auto msg = [](auto f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg([] { partition_uniform(2, 3); }),
            "cannot cut 2 layers into 3 stages: every stage needs at least one layer");
  EXPECT_EQ(msg([] { partition_from_string("3,3", 8, 2); }), "partition 3,3 covers 6 layers, but the model has 8");
  EXPECT_EQ(msg([] { partition_from_string("3,0,5", 8, 3); }),
            "stage 1 of the partition has 0 layers; every stage needs at least one");
  EXPECT_EQ(msg([] { partition_from_string("3,5", 8, 3); }), "partition '3,5' has 2 stages, but 3 were asked for");
  EXPECT_EQ(msg([] { partition_from_string("3,x", 8, 2); }),
            "partition '3,x': expected 'uniform' or layer counts such as 3,3,2");
  EXPECT_THROW(partition_uniform(8, 3).stage_of(8), ConfigError);
}

// ---- partition_balanced ----

// The message of the ConfigError that f throws, or "no error".
std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

// Small integer costs (ties on purpose), from a fixed linear congruential generator.
std::vector<double> pseudo_random(int n, std::uint32_t seed, int lo, int hi) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    v.push_back(lo + static_cast<int>((seed >> 16) % static_cast<std::uint32_t>(hi - lo + 1)));
  }
  return v;
}

// Sum over [b, e), first layer to last, as the library adds.
double sum(const std::vector<double>& v, int b, int e) {
  double s = 0;
  for (int i = b; i < e; ++i) s += v[i];
  return s;
}

// The header's guarantee, by brute force over every cut: bounds of the best fitting cut, or
// empty when none fits; `smallest_cap` gets the smallest memory cap any cut fits.
std::vector<int> brute_force(const std::vector<double>& cost, int stages, const std::vector<double>& memory,
                             double cap, double* smallest_cap) {
  const int layers = static_cast<int>(cost.size());
  std::vector<int> best;
  std::vector<double> best_sorted;
  *smallest_cap = std::numeric_limits<double>::infinity();
  std::vector<int> bounds(stages + 1, 0);
  bounds[stages] = layers;
  // Every choice of stages - 1 inner boundaries from 1..layers-1, increasing.
  std::function<void(int, int)> pick = [&](int s, int from) {
    if (s == stages) {
      std::vector<double> costs;
      double most_memory = 0;
      for (int t = 0; t < stages; ++t) {
        costs.push_back(sum(cost, bounds[t], bounds[t + 1]));
        if (!memory.empty()) most_memory = std::max(most_memory, sum(memory, bounds[t], bounds[t + 1]));
      }
      *smallest_cap = std::min(*smallest_cap, most_memory);
      if (most_memory > cap) return;
      std::sort(costs.rbegin(), costs.rend());
      bool better = best.empty() || costs < best_sorted;
      if (!better && costs == best_sorted)  // rule 4: latest boundaries, the last one first
        better = std::lexicographical_compare(best.rbegin(), best.rend(), bounds.rbegin(), bounds.rend());
      if (better) {
        best = bounds;
        best_sorted = costs;
      }
      return;
    }
    for (int b = from; b <= layers - (stages - s); ++b) {
      bounds[s] = b;
      pick(s + 1, b + 1);
    }
  };
  pick(1, 1);
  return best;
}

TEST(PartitionBalanced, MatchesBruteForceOnEverySmallCase) {
  int compared = 0, refused = 0;
  for (int layers = 1; layers <= 9; ++layers) {
    for (std::uint32_t seed = 1; seed <= 6; ++seed) {
      const auto cost = pseudo_random(layers, seed, seed == 6 ? 0 : 1, seed <= 2 ? 3 : 9);
      const auto memory = pseudo_random(layers, seed + 100, 0, 5);
      for (int stages = 1; stages <= layers; ++stages) {
        for (double cap : {std::numeric_limits<double>::infinity(), 12.0, 8.0, 5.0, 3.0}) {
          const std::vector<double> mem = std::isinf(cap) ? std::vector<double>{} : memory;
          double smallest = 0;
          const auto expected = brute_force(cost, stages, mem, cap, &smallest);
          SCOPED_TRACE("layers " + std::to_string(layers) + " seed " + std::to_string(seed) + " stages " +
                       std::to_string(stages) + " cap " + std::to_string(cap));
          if (expected.empty()) {
            const auto first_over = std::find_if(mem.begin(), mem.end(), [&](double m) { return m > cap; });
            const std::string why =
                first_over != mem.end()
                    ? "layer " + std::to_string(first_over - mem.begin()) + " alone needs " +
                          std::to_string(static_cast<int>(*first_over)) + " bytes of memory, more than the cap of " +
                          std::to_string(static_cast<int>(cap)) + " bytes"
                    : "no cut of " + std::to_string(layers) + " layers into " + std::to_string(stages) +
                          " stages keeps every stage within the memory cap of " +
                          std::to_string(static_cast<int>(cap)) + " bytes; the smallest cap that fits is " +
                          std::to_string(static_cast<int>(smallest)) + " bytes";
            EXPECT_EQ(config_error([&] { partition_balanced(cost, stages, mem, cap); }), why);
            ++refused;
          } else {
            EXPECT_EQ(partition_balanced(cost, stages, mem, cap).bounds, expected);
            ++compared;
          }
        }
      }
    }
  }
  // Both branches really ran, many times.
  EXPECT_GT(compared, 800);
  EXPECT_GT(refused, 100);
  std::printf("brute force: %d cuts compared, %d refusals compared\n", compared, refused);
}

TEST(PartitionBalanced, EqualCostsGiveTheUniformCut) {
  for (int layers = 1; layers <= 16; ++layers)
    for (int stages = 1; stages <= layers; ++stages)
      EXPECT_EQ(partition_balanced(std::vector<double>(layers, 2.5), stages).bounds,
                partition_uniform(layers, stages).bounds)
          << layers << " layers, " << stages << " stages";
  EXPECT_EQ(partition_balanced(std::vector<double>(8, 1.0), 3).bounds, (std::vector<int>{0, 3, 6, 8}));
}

TEST(PartitionBalanced, GptLikeModel) {
  // embed, pos, 12 blocks, ln_f, head: the head (a d x vocab projection) costs almost three
  // blocks. By hand: the last stage takes one block, ln_f and the head (38); the other 11 blocks
  // go 3 / 4 / 4 with embed and pos on the first stage (32, 40, 40). Giving the last stage no
  // block puts 12 blocks on three stages (>= 42); giving it two costs 48.
  std::vector<double> cost = {1, 1};
  cost.insert(cost.end(), 12, 10);
  cost.insert(cost.end(), {1, 27});
  const Partition p = partition_balanced(cost, 4);
  EXPECT_EQ(p.bounds, (std::vector<int>{0, 5, 9, 13, 16}));
  EXPECT_EQ(stage_costs(p, cost), (std::vector<double>{32, 40, 40, 38}));
  EXPECT_EQ(to_string(partition_uniform(16, 4)), "4,4,4,4");
  EXPECT_EQ(stage_costs(partition_uniform(16, 4), cost), (std::vector<double>{22, 40, 40, 48}));
}

TEST(PartitionBalanced, TiesFollowTheSecondLargestThenLaterBoundaries) {
  // 8 blocks, head 12. The largest stage is 30 at best (three blocks somewhere); the second
  // largest is then 23 (the last stage: block, ln_f, head), which leaves 4,3,2,3 and 4,2,3,3,
  // both {30, 23, 22, 20}; the later boundary wins: 4,3,2,3.
  std::vector<double> cost = {1, 1};
  cost.insert(cost.end(), 8, 10);
  cost.insert(cost.end(), {1, 12});
  const Partition p = partition_balanced(cost, 4);
  EXPECT_EQ(p.bounds, (std::vector<int>{0, 4, 7, 9, 12}));
  EXPECT_EQ(stage_costs(p, cost), (std::vector<double>{22, 30, 20, 23}));
  // Same largest stage, worse second: the min-max alone would accept this one.
  EXPECT_EQ(stage_costs(partition_explicit({3, 3, 3, 3}, 12), cost), (std::vector<double>{12, 30, 30, 23}));
}

TEST(PartitionBalanced, MemoryCapMovesTheCut) {
  const std::vector<double> cost(6, 1.0), memory = {1, 1, 1, 1, 1, 5};
  EXPECT_EQ(partition_balanced(cost, 2).bounds, (std::vector<int>{0, 3, 6}));
  EXPECT_EQ(partition_balanced(cost, 2, memory, 6).bounds, (std::vector<int>{0, 4, 6}));  // 3,3 needs 7
  EXPECT_EQ(partition_balanced(cost, 2, memory, 7).bounds, (std::vector<int>{0, 3, 6}));
  EXPECT_EQ(partition_balanced(cost, 2, memory, 5).bounds, (std::vector<int>{0, 5, 6}));
}

TEST(PartitionBalanced, LargeInputIsQuickAndNeverWorseThanUniform) {
  const auto cost = pseudo_random(2000, 7, 1, 1000);
  const Partition p = partition_balanced(cost, 16);
  EXPECT_EQ(p.num_stages(), 16);
  EXPECT_EQ(p.num_layers(), 2000);
  const auto ours = stage_costs(p, cost), uniform = stage_costs(partition_uniform(2000, 16), cost);
  EXPECT_LE(*std::max_element(ours.begin(), ours.end()), *std::max_element(uniform.begin(), uniform.end()));
}

TEST(PartitionBalanced, BadInputSaysWhat) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(config_error([] { partition_balanced({1, 2}, 0); }), "need at least one stage, got 0");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2}, 3); }),
            "cannot cut 2 layers into 3 stages: every stage needs at least one layer");
  EXPECT_EQ(config_error([] { partition_balanced({}, 1); }),
            "cannot cut 0 layers into 1 stages: every stage needs at least one layer");
  EXPECT_EQ(config_error([] { partition_balanced({1, -2, 3}, 2); }),
            "layer 1 has cost -2; a layer's cost must be finite and non-negative");
  EXPECT_EQ(config_error([&] { partition_balanced({inf, 1}, 2); }),
            "layer 0 has cost inf; a layer's cost must be finite and non-negative");
  EXPECT_EQ(config_error([] { partition_balanced({1, std::nan(""), 3}, 2); }).substr(0, 20), "layer 1 has cost nan");
  EXPECT_EQ(config_error([] { partition_balanced({1e308, 1e308}, 1); }),
            "the layers' cost adds up to more than a double can hold");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2, 3}, 2, {1, 2}, 10); }),
            "memory lists 2 layers, but cost lists 3");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2, 3}, 2, {1, -1, 0}, 10); }),
            "layer 1 has memory -1; a layer's memory must be finite and non-negative");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2, 3}, 2, {1, 1, 1}, -1); }),
            "memory cap -1 is not a non-negative number of bytes");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2, 3}, 2, {4e9, 8e9, 1e9}, 6e9); }),
            "layer 1 alone needs 8000000000 bytes of memory, more than the cap of 6000000000 bytes");
  EXPECT_EQ(config_error([] { partition_balanced({1, 2, 3}, 2, {2.5, 2.5, 2.5}, 4); }),
            "no cut of 3 layers into 2 stages keeps every stage within the memory cap of 4 bytes; "
            "the smallest cap that fits is 5 bytes");
  EXPECT_EQ(config_error([] { stage_costs(partition_uniform(4, 2), {1, 2, 3}); }),
            "partition 2,2 covers 4 layers, but cost lists 3");
}

// A GPT's layers: light embeddings and head, heavy blocks.
std::vector<LayerFacts> gpt_facts(int blocks) {
  std::vector<LayerFacts> f{{"embed", 9344}, {"pos", 8192}};
  for (int b = 0; b < blocks; ++b) f.push_back({"block" + std::to_string(b), 198272});
  f.push_back({"ln_f", 256});
  f.push_back({"lm_head", 9344});
  return f;
}

TEST(PartitionMethods, ParametersAndTypeBalanceTheBlocks) {
  // 6 blocks over 4 stages. By parameters: two blocks in each middle stage, one beside the light
  // layers at each end (a stage of two blocks and an embedding would be the largest). By type,
  // only blocks count: 2,2,1,1 blocks, the earlier stages taking the weightless layers.
  EXPECT_EQ(to_string(partition_from_string("parameters", 4, gpt_facts(6))), "3,2,2,3");
  EXPECT_EQ(to_string(partition_from_string("type:block", 4, gpt_facts(6))), "4,2,1,3");
  EXPECT_EQ(to_string(partition_from_string("type:BLOCK[0-2]", 2, gpt_facts(6))), "4,6");
  // The plain methods take the layer count from the facts.
  EXPECT_EQ(to_string(partition_from_string("uniform", 4, gpt_facts(6))), "3,3,2,2");
  EXPECT_EQ(to_string(partition_from_string("2,8", 2, gpt_facts(6))), "2,8");
  EXPECT_TRUE(partition_weighs_layers("parameters"));
  EXPECT_TRUE(partition_weighs_layers("type:x"));
  EXPECT_FALSE(partition_weighs_layers("uniform"));
  EXPECT_FALSE(partition_weighs_layers("3,3"));
}

TEST(PartitionMethods, BadMethodsAreRefusedWithoutLayerFacts) {
  auto error = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error([] { check_partition_method("type:", 10, 2); }),
            "partition 'type:': expected a regular expression after 'type:'");
  EXPECT_EQ(error([] { check_partition_method("type:block(", 10, 2); }).substr(0, 52),
            "partition 'type:block(': 'block(' is not a regular e");
  EXPECT_EQ(error([] { check_partition_method("parameters", 3, 4); }),
            "cannot cut 3 layers into 4 stages: every stage needs at least one layer");
  EXPECT_EQ(error([] { check_partition_method("balanced", 10, 2); }),
            "partition 'balanced': expected 'uniform' or layer counts such as 3,3,2");
  EXPECT_EQ(error([] { check_partition_method("parameters", 10, 2); }), "no error");
  EXPECT_EQ(error([] { partition_from_string("type:attn", 2, gpt_facts(2)); }),
            "partition 'type:attn': no layer name matches 'attn'");
}

}  // namespace
}  // namespace tpipe
