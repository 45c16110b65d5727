// Cutting the model into the schedule's stages (cut_model in engine_impl.h): the methods that need
// no facts, those that weigh layers by what building them shows (parameters, names), and the
// profile, which rank 0 measures for everyone.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>

#include "engine_impl.h"
#include "tpipe/profile.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {
namespace {

// The name and parameter count of every layer, for the partition methods that weigh layers: each
// layer is built once and dropped (a tied one counts its module at each position). The default
// generator is put back, so the weights the stages then build are the same as without this.
std::vector<LayerFacts> layer_facts(const std::vector<LayerSpec>& layers, const std::optional<std::uint64_t>& seed) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor state = gen.get_state();
  std::vector<LayerFacts> facts;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (seed) torch::manual_seed(*seed + i);
    std::int64_t n = 0;
    if (layers[i].tied) {
      for (const auto& p : layers[i].tied->factory()->parameters()) n += p.numel();
    } else {
      for (const auto& [name, p] : layers[i].factory()->named_parameters()) n += p.numel();
    }
    facts.push_back({layers[i].name, n});
  }
  gen.set_state(state);
  return facts;
}

// The measured numbers of each layer, one row per layer, as rank 0 sends them.
constexpr int kColumns = 7;

at::Tensor pack(const std::vector<LayerFacts>& facts) {
  at::Tensor t = at::zeros({static_cast<std::int64_t>(facts.size()), kColumns}, at::kDouble);
  auto a = t.accessor<double, 2>();
  for (std::size_t i = 0; i < facts.size(); ++i) {
    const LayerFacts& f = facts[i];
    const double row[kColumns] = {static_cast<double>(f.parameters), f.parameter_bytes, static_cast<double>(f.rows),
                                  f.forward_s, f.backward_s, f.activation_bytes, f.output_bytes};
    for (int c = 0; c < kColumns; ++c) a[i][c] = row[c];
  }
  return t;
}

std::vector<LayerFacts> unpack(const at::Tensor& t, const std::vector<LayerSpec>& layers) {
  auto a = t.accessor<double, 2>();
  std::vector<LayerFacts> facts(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i)
    facts[i] = {layers[i].name, static_cast<std::int64_t>(a[i][0]), a[i][1], static_cast<int>(a[i][2]),
                a[i][3], a[i][4], a[i][5], a[i][6]};
  return facts;
}

// Rank 0 profiles; every rank learns the numbers, or rank 0's error.
std::vector<LayerFacts> profiled_facts(const std::vector<LayerSpec>& layers, const EngineOptions& o,
                                       Communicator& comm) {
  std::vector<LayerFacts> facts;
  std::string error;
  if (comm.rank() == 0) {
    try {
      if (o.profile_sample.empty())
        throw ConfigError("partition 'profile' needs a sample micro-batch (EngineOptions::profile_sample) on rank 0");
      ProfileOptions po;
      po.layer_seed = o.layer_seed;
      facts = profile_layers(layers, o.profile_sample, po);
    } catch (const Error& e) {
      error = e.what();
    }
  }
  const auto errors = comm.world().all_gather_text(error, "the profile's outcome");
  if (!errors[0].empty()) throw ConfigError("rank 0 could not profile the model: " + errors[0]);
  std::vector<at::Tensor> numbers{comm.rank() == 0 ? pack(facts)
                                                   : at::zeros({static_cast<std::int64_t>(layers.size()), kColumns},
                                                               at::kDouble)};
  comm.world().broadcast(numbers, 0, "the profile of every layer");
  return unpack(numbers[0], layers);
}

}  // namespace

Partition cut_model(const std::vector<LayerSpec>& layers, const Schedule& compute, const EngineOptions& o,
                    Communicator& comm) {
  const int stages = compute.num_stages();
  if (!partition_weighs_layers(o.partition))
    return partition_from_string(o.partition, static_cast<int>(layers.size()), stages);
  if (!partition_profiles_layers(o.partition))
    return partition_from_string(o.partition, stages, layer_facts(layers, o.layer_seed));
  const std::vector<LayerFacts> facts = profiled_facts(layers, o, comm);
  if (o.stage_memory_cap <= 0) return partition_from_string(o.partition, stages, facts);
  const auto inflight = simulate(compute).peak_inflight_per_rank;
  const double most = inflight.empty() ? 1.0 : *std::max_element(inflight.begin(), inflight.end());
  std::vector<double> memory;
  for (const auto& f : facts) memory.push_back(4 * f.parameter_bytes + most * f.activation_bytes);
  return partition_from_string(o.partition, stages, facts, memory, o.stage_memory_cap);
}

}  // namespace tpipe
