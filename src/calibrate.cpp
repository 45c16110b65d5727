// Calibrating a layer profile against the engine (see calibrate.h).
#include "tpipe/calibrate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "tpipe/error.h"
#include "tpipe/util/stats.h"

namespace tpipe {
namespace {

template <class Get>
double profiled(const std::vector<LayerFacts>& facts, const Partition& cut, int stage, Get get) {
  double s = 0;
  for (int i = cut.begin(stage); i < cut.end(stage); ++i) s += get(facts.at(static_cast<std::size_t>(i)));
  return s;
}

double ratio(double engine, double profile) { return engine > 0 && profile > 0 ? engine / profile : 1.0; }

}  // namespace

StageTimes stage_times(const Partition& cut, const std::vector<trace::StepTrace>& steps) {
  std::map<std::pair<int, Op>, std::vector<double>> all;
  for (const auto& t : steps)
    for (const auto& e : t.events)
      if (is_compute(e.action.op)) all[{e.action.stage, e.action.op}].push_back(1e-6 * (e.end_us - e.start_us));
  StageTimes out{cut, {}};
  for (auto& [key, v] : all) out.seconds[key] = median(std::move(v));
  return out;
}

EngineCalibration calibration_of(const std::vector<StageTimes>& runs, const std::vector<LayerFacts>& facts) {
  double f[2] = {0, 0}, whole[2] = {0, 0}, in[2] = {0, 0}, wt[2] = {0, 0};  // {engine, profile}
  for (const auto& run : runs) {
    if (run.cut.num_layers() != static_cast<int>(facts.size()))
      throw ConfigError("a calibration run of " + std::to_string(run.cut.num_layers()) + " layers against a profile of " +
                        std::to_string(facts.size()));
    bool split = false;
    for (const auto& [key, s] : run.seconds) split = split || key.second == Op::Weight;
    for (const auto& [key, s] : run.seconds) {
      const auto [stage, op] = key;
      if (op == Op::Forward) {
        f[0] += s;
        f[1] += profiled(facts, run.cut, stage, [](const LayerFacts& l) { return l.forward_s; });
      } else if (op == Op::Backward && !split) {
        whole[0] += s;
        whole[1] += profiled(facts, run.cut, stage, [](const LayerFacts& l) { return l.backward_s; });
      } else if (op == Op::Backward && stage > 0) {
        in[0] += s;
        in[1] += profiled(facts, run.cut, stage, [](const LayerFacts& l) { return l.input_grad_s; });
      } else if (op == Op::Weight && stage > 0) {
        wt[0] += s;
        wt[1] += profiled(facts, run.cut, stage, [](const LayerFacts& l) { return l.weight_grad_s; });
      }
    }
  }
  return {ratio(f[0], f[1]), ratio(whole[0], whole[1]), ratio(in[0], in[1]), ratio(wt[0], wt[1])};
}

std::vector<StageTimes> time_stages_alone(const std::vector<LayerSpec>& layers, const LossFn& loss,
                                          const Payload& inputs, const Payload& targets, int microbatches,
                                          int steps) {
  if (layers.size() < 2) throw ConfigError("calibrating a profile needs at least two layers");
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor rng_state = gen.get_state();  // the model built here must not change later ones
  std::vector<StageTimes> runs;
  for (const char* schedule : {"interleaved-1f1b", "zb-v"}) {
    Communicator comm(0, 1, c10::make_intrusive<c10d::HashStore>());
    EngineOptions o;
    o.schedule = schedule;
    o.chunks_per_rank = 2;
    o.microbatches = microbatches;
    o.record = true;
    PipelineEngine engine(layers, loss, nullptr, comm, o);
    std::vector<trace::StepTrace> traces;
    for (int step = 0; step <= steps; ++step) {
      engine.train_batch(inputs, targets);
      if (step > 0) traces.push_back(engine.last_trace());  // the first warms up
    }
    runs.push_back(stage_times(engine.partition(), traces));
  }
  gen.set_state(rng_state);
  return runs;
}

std::vector<LayerFacts> calibrated(std::vector<LayerFacts> facts, const EngineCalibration& f) {
  for (auto& l : facts) {
    l.forward_s *= f.forward;
    l.backward_s *= f.backward;
    l.input_grad_s *= f.input_grad;
    l.weight_grad_s *= f.weight_grad;
  }
  return facts;
}

}  // namespace tpipe
