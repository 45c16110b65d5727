// The spine of the project: a pipelined step equals one process on the whole (global) batch.
// Loss, gradient norm, every gradient at every step and the weights after the last step, in
// float64, relative error <= 1e-10. Ranks are threads here; fidelity_processes_* runs real ones.
//   Threads/Fidelity:  every schedule, p in 1..4, m in {1,2,3,4,8}, batch 10 (uneven for most m)
//   DataParallel:      pp x dp in {2x2, 3x2, 1x2}, gpipe, 1f1b, zb-h1, global batch 14 (7 a replica)
//   Clipping, Tied:    global-norm clipping; weights tied across stages (toy and GPT)
//   Checkpointed:      activation checkpointing (always, except_last) under every schedule; with
//                      dropout, the same masks as without checkpointing, bit for bit
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <tuple>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

constexpr int kSteps = 3;
constexpr double kTolerance = 1e-10;

struct Case {
  std::string schedule;
  int pp;
  int dp;
  int microbatches;
  int chunks = 0;  // stages per rank; 0: the schedule's own
  std::string checkpoint = "never";
  bool gloo = false;  // point-to-point through Gloo even between ranks of one host
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.schedule << " pp=" << c.pp << " dp=" << c.dp << " m=" << c.microbatches << " v=" << c.chunks
      << " checkpoint=" << c.checkpoint << (c.gloo ? " gloo" : "");
}

EngineOptions options_of(const Case& c) {
  EngineOptions o;
  o.schedule = c.schedule;
  o.chunks_per_rank = c.chunks;
  o.microbatches = c.microbatches;
  o.dp = c.dp;
  o.pp = c.pp;
  o.checkpoint = c.checkpoint;
  return o;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string schedule = c.schedule;
  std::replace(schedule.begin(), schedule.end(), '-', '_');  // test names allow letters, digits, '_'
  return schedule + "_p" + std::to_string(c.pp) + (c.chunks > 0 ? "_v" + std::to_string(c.chunks) : "") +
         (c.dp > 1 ? "_dp" + std::to_string(c.dp) : "") + "_m" + std::to_string(c.microbatches) +
         (c.checkpoint != "never" ? "_" + c.checkpoint : "") + (c.gloo ? "_gloo" : "");
}

// Runs `model` pipelined on pp x dp thread ranks and checks every rank against the reference;
// every parameter must be held somewhere. Returns the engines' names per rank.
void expect_equal_to_single_process(const ModelDef& model, const Case& c, int batch, int steps,
                                    const Trace& ref) {
  std::mutex mu;
  std::set<std::string> seen;
  CommOptions comm_options;
  comm_options.shared_memory = !c.gloo;
  expect_ranks_ok(c.pp * c.dp, [&](Communicator& comm) {
    const Trace got = pipelined_run(model, comm, options_of(c), batch, steps);
    std::string worst;
    const double err = max_relative_error(got, ref, &worst);
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_LE(err, kTolerance) << "rank " << comm.rank() << ", worst: " << worst;
    for (auto& [name, w] : got.weights) seen.insert(name);
  }, comm_options);
  std::set<std::string> all;
  for (auto& [name, w] : ref.weights) all.insert(name);
  EXPECT_EQ(seen, all) << "every parameter lives on some stage";
}

class Fidelity : public ::testing::TestWithParam<Case> {};

TEST_P(Fidelity, PipelineEqualsSingleProcess) {
  static const Trace ref = reference_run(fidelity_model(), 10, kSteps);
  expect_equal_to_single_process(fidelity_model(), GetParam(), 10, kSteps, ref);
}

std::vector<Case> pipeline_cases() {
  std::vector<Case> cases;
  for (const char* s : {"gpipe", "1f1b", "naive", "zb-h1", "interleaved-1f1b", "zb-v"})
    for (int p : {1, 2, 3, 4})
      for (int m : {1, 2, 3, 4, 8}) cases.push_back({s, p, 1, m});
  // Interleaved with more chunks: 8 layers in 4 chunks of 2 ranks, 3 of 2 (6 stages).
  for (int v : {3, 4})
    for (int m : {1, 3, 4, 5}) cases.push_back({"interleaved-1f1b", 2, 1, m, v});
  // Messages through Gloo's sockets, as between hosts (the cases above use shared memory).
  for (const char* s : {"gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"}) {
    cases.push_back({s, 3, 1, 4});
    cases.back().gloo = true;
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Threads, Fidelity, ::testing::ValuesIn(pipeline_cases()), case_name);

class DataParallel : public ::testing::TestWithParam<Case> {};

TEST_P(DataParallel, PipelineTimesReplicasEqualsSingleProcessOnTheGlobalBatch) {
  static const Trace ref = reference_run(fidelity_model(), 14, kSteps);
  expect_equal_to_single_process(fidelity_model(), GetParam(), 14, kSteps, ref);
}

std::vector<Case> dp_cases() {
  std::vector<Case> cases;
  for (const char* s : {"gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"})
    for (auto [pp, dp] : {std::pair{2, 2}, {3, 2}, {1, 2}}) cases.push_back({s, pp, dp, 3});
  cases.push_back({"1f1b", 2, 2, 3});
  cases.back().gloo = true;
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Threads, DataParallel, ::testing::ValuesIn(dp_cases()), case_name);

// Global-norm clipping over all stages and replicas equals clip_grad_norm_ in one process; the
// threshold is below the norm so every step clips.
TEST(Clipping, ClippedStepEqualsSingleProcessClippedStep) {
  ModelDef model = fidelity_model();
  model.clip = 0.05;
  const Trace ref = reference_run(model, 12, kSteps);
  ASSERT_GT(ref.grad_norms[0], 0.1) << "the test must actually clip";
  for (Case c : {Case{"1f1b", 3, 1, 4}, Case{"gpipe", 2, 2, 3}, Case{"zb-h1", 3, 1, 4}, Case{"zb-h1", 2, 2, 3},
                 Case{"interleaved-1f1b", 2, 2, 3}, Case{"zb-v", 3, 1, 4}, Case{"zb-v", 2, 2, 3}})
    expect_equal_to_single_process(model, c, 12, kSteps, ref);
}

TEST(Tied, KeysUsedInDifferentOrdersOnDifferentStages) {
  const Trace ref = reference_run(tied_toy_model(), 10, kSteps);
  ASSERT_EQ(ref.weights.count("a.weight") + ref.weights.count("b.weight"), 2u);
  // zb-h1 with p = 1: both positions of each key on one stage, a weight used twice there, so
  // that stage cannot split its backward and runs it whole in B.
  // zb-v p = 2: b0 (stage 0) and b1 (stage 2) on different ranks, a0 (stage 1) and a1 (stage 3)
  // too; interleaved p = 2, v = 2: stages 0 and 2 on rank 0 hold b0 and b1, one module there.
  for (Case c : {Case{"1f1b", 4, 1, 3}, Case{"gpipe", 3, 1, 2}, Case{"1f1b", 2, 2, 2}, Case{"zb-h1", 4, 1, 3},
                 Case{"zb-h1", 2, 2, 2}, Case{"zb-h1", 1, 1, 3}, Case{"zb-v", 2, 1, 3}, Case{"zb-v", 4, 1, 3},
                 Case{"interleaved-1f1b", 2, 1, 4}, Case{"interleaved-1f1b", 2, 2, 2}})
    expect_equal_to_single_process(tied_toy_model(), c, 10, kSteps, ref);
}

class TiedGpt : public ::testing::TestWithParam<Case> {};

// The embedding on the first stage and the output projection on the last share "wte".
TEST_P(TiedGpt, EqualsTheSingleProcessModelWithOneSharedWeight) {
  static const Trace ref = reference_run(gpt_test_model(), 8, kSteps);
  expect_equal_to_single_process(gpt_test_model(), GetParam(), 8, kSteps, ref);
}

INSTANTIATE_TEST_SUITE_P(Threads, TiedGpt,
                         ::testing::Values(Case{"1f1b", 2, 1, 2}, Case{"gpipe", 3, 1, 4}, Case{"1f1b", 2, 2, 2},
                                           Case{"gpipe", 3, 2, 2}, Case{"zb-h1", 2, 1, 2}, Case{"zb-h1", 3, 1, 4},
                                           Case{"zb-h1", 3, 2, 3},
                                           // zb-v: embedding and output projection both on rank 0,
                                           // one module; interleaved: on ranks 0 and p-1.
                                           Case{"zb-v", 2, 1, 4}, Case{"zb-v", 3, 2, 3},
                                           Case{"interleaved-1f1b", 3, 1, 3}, Case{"interleaved-1f1b", 2, 2, 4}),
                         case_name);

// The partition methods that weigh layers cut the tied GPT by its parameters or by its blocks'
// names; the step still equals the single process.
TEST(TiedGptPartition, ByParametersAndByTypeEqualsTheSingleProcess) {
  const Trace ref = reference_run(gpt_test_model(), 8, kSteps);
  for (const auto& [schedule, method, cut] : {std::tuple{"zb-v", "parameters", "2,1,1,2"},
                                              std::tuple{"1f1b", "type:block", "3,3"}}) {
    std::mutex mu;
    expect_ranks_ok(2, [&](Communicator& comm) {
      EngineOptions o;
      o.schedule = schedule;
      o.partition = method;
      o.microbatches = 4;
      std::unique_ptr<PipelineEngine> engine;
      const Trace got = pipelined_run(gpt_test_model(), comm, o, 8, kSteps, &engine);
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_EQ(to_string(engine->partition()), cut) << method;
      EXPECT_LE(max_relative_error(got, ref), kTolerance) << method << " rank " << comm.rank();
    });
  }
}

// A checkpointed micro-batch's forward runs twice; the step must not change. Every schedule at
// p = 1, 2, 3 and with dp = 2, one test per mode (each case takes milliseconds; a test process
// of its own would take seconds).
class Checkpointed : public ::testing::TestWithParam<std::string> {};

TEST_P(Checkpointed, EqualsSingleProcessUnderEverySchedule) {
  static const Trace ref = reference_run(fidelity_model(), 10, kSteps);
  std::vector<Case> cases;
  for (const char* s : {"gpipe", "1f1b", "naive", "zb-h1", "interleaved-1f1b", "zb-v"})
    for (auto [p, m] : {std::pair{2, 4}, {3, 3}, {1, 2}}) cases.push_back({s, p, 1, m, 0, GetParam()});
  cases.push_back({"1f1b", 2, 2, 3, 0, GetParam()});
  cases.push_back({"zb-v", 2, 2, 3, 0, GetParam()});
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c));
    expect_equal_to_single_process(fidelity_model(), c, 10, kSteps, ref);
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, Checkpointed, ::testing::Values("always", "except_last"));

// Every rank's trace of a run of `model` under case `c`, by rank.
std::vector<Trace> traces_of(const ModelDef& model, const Case& c, int batch) {
  std::vector<Trace> traces(c.pp * c.dp);
  expect_ranks_ok(c.pp * c.dp, [&](Communicator& comm) {
    traces[comm.rank()] = pipelined_run(model, comm, options_of(c), batch, kSteps);
  });
  return traces;
}

// With dropout, each layer draws its masks from its own generator, micro-batch by micro-batch in
// order, so every schedule and cut with the same micro-batches draws the same masks as one rank
// does; checkpointing replays them for the recomputation. Same schedule with and without
// checkpointing: the same arithmetic, so bit for bit.
TEST(CheckpointedDropout, SameMasksAsWithoutCheckpointingUnderEverySchedule) {
  const ModelDef model = gpt_test_model(0.2);
  const Trace one_rank = traces_of(model, {"1f1b", 1, 1, 4}, 8)[0];
  const Trace no_dropout = traces_of(gpt_test_model(0), {"1f1b", 1, 1, 4}, 8)[0];
  ASSERT_GT(std::abs(one_rank.losses[0] - no_dropout.losses[0]), 1e-3) << "dropout must change the loss";
  for (Case c : {Case{"gpipe", 2, 1, 4}, Case{"1f1b", 3, 1, 4}, Case{"zb-h1", 2, 1, 4}, Case{"interleaved-1f1b", 2, 1, 4},
                 Case{"zb-v", 2, 1, 4}, Case{"1f1b", 1, 1, 4}}) {
    const std::vector<Trace> plain = traces_of(model, c, 8);
    for (const char* mode : {"always", "except_last"}) {
      c.checkpoint = mode;
      const std::vector<Trace> checkpointed = traces_of(model, c, 8);
      for (std::size_t r = 0; r < plain.size(); ++r) {
        std::string worst;
        EXPECT_EQ(max_relative_error(checkpointed[r], plain[r], &worst), 0.0)
            << c.schedule << " p=" << c.pp << " " << mode << " rank " << r << ": " << worst;
        EXPECT_LE(max_relative_error(checkpointed[r], one_rank, &worst), kTolerance)
            << c.schedule << " p=" << c.pp << " " << mode << " rank " << r << ": " << worst;
      }
    }
  }
}

// The comparison is sensitive: a run on a different batch is far from the reference.
TEST(FidelityCheck, DetectsADifferentComputation) {
  const Trace ref = reference_run(fidelity_model(), 10, kSteps);
  EXPECT_GT(max_relative_error(reference_run(fidelity_model(), 9, kSteps), ref), 1e-3);
}

// The loss every rank reports is the same number, the batch mean.
TEST(FidelityCheck, LossIsTheSameOnEveryRank) {
  const Trace ref = reference_run(fidelity_model(), 10, 1);
  std::vector<double> losses(6);
  expect_ranks_ok(6, [&](Communicator& comm) {
    EngineOptions o;
    o.microbatches = 2;
    o.dp = 2;
    losses[comm.rank()] = pipelined_run(fidelity_model(), comm, o, 10, 1).losses[0];
  });
  for (int r = 1; r < 6; ++r) EXPECT_EQ(losses[r], losses[0]) << r;
  EXPECT_NEAR(losses[0], ref.losses[0], 1e-12 * ref.losses[0]);
}

}  // namespace
}  // namespace tpipe::testing
