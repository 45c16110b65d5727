// The spine of the project: a pipelined step equals one process on the whole batch. Loss,
// every gradient at every step and the weights after 3 SGD-momentum steps, float64, relative
// error <= 1e-10, for every schedule, p in 1..4, m in {1,2,3,4,8} with a batch of 10 (not
// divisible by 3, 4 or 8). Ranks are threads here; fidelity_processes_* runs real processes.
#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "fidelity_model.h"
#include "ranks.h"

namespace tpipe::testing {
namespace {

constexpr int kBatch = 10;
constexpr int kSteps = 3;
constexpr double kTolerance = 1e-10;

const Trace& reference() {
  static const Trace ref = reference_run(kBatch, kSteps);
  return ref;
}

struct Case {
  std::string schedule;
  int stages;
  int microbatches;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.schedule << " p=" << c.stages << " m=" << c.microbatches; }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.schedule + "_p" + std::to_string(info.param.stages) + "_m" + std::to_string(info.param.microbatches);
}

class Fidelity : public ::testing::TestWithParam<Case> {};

TEST_P(Fidelity, PipelineEqualsSingleProcess) {
  const Case c = GetParam();
  std::mutex mu;
  std::set<std::string> seen;
  expect_ranks_ok(c.stages, [&](Communicator& comm) {
    EngineOptions o;
    o.schedule = c.schedule;
    o.microbatches = c.microbatches;
    o.input_chunking = fidelity_input_chunking();
    PipelineEngine engine(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
    const Trace got = pipelined_run(engine, kBatch, kSteps);
    std::string worst;
    const double err = max_relative_error(got, reference(), &worst);
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_LE(err, kTolerance) << "rank " << comm.rank() << ", worst: " << worst;
    for (auto& [name, w] : got.weights) EXPECT_TRUE(seen.insert(name).second) << name << " on two ranks";
  });
  std::set<std::string> all;
  for (auto& [name, w] : reference().weights) all.insert(name);
  EXPECT_EQ(seen, all) << "every parameter lives on exactly one stage";
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const char* s : {"gpipe", "1f1b", "naive"})
    for (int p : {1, 2, 3, 4})
      for (int m : {1, 2, 3, 4, 8}) cases.push_back({s, p, m});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Threads, Fidelity, ::testing::ValuesIn(all_cases()), case_name);

// The comparison is sensitive: a run on a different batch is far from the reference.
TEST(FidelityCheck, DetectsADifferentComputation) {
  const Trace other = reference_run(kBatch - 1, kSteps);
  EXPECT_GT(max_relative_error(other, reference()), 1e-3);
}

// The loss every rank reports is the batch mean; check its value on step 0 for one case.
TEST(FidelityCheck, LossIsTheSameOnEveryRank) {
  std::vector<double> losses(3);
  expect_ranks_ok(3, [&](Communicator& comm) {
    EngineOptions o;
    o.microbatches = 4;
    o.input_chunking = fidelity_input_chunking();
    PipelineEngine engine(fidelity_layers(), fidelity_loss(), fidelity_optimizer(), comm, o);
    losses[comm.rank()] = pipelined_run(engine, kBatch, 1).losses[0];
  });
  EXPECT_EQ(losses[0], losses[2]);
  EXPECT_EQ(losses[1], losses[2]);
  EXPECT_NEAR(losses[0], reference().losses[0], 1e-12 * reference().losses[0]);
}

}  // namespace
}  // namespace tpipe::testing
