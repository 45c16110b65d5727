// The pipeline engine: where this rank sits, building its stage and groups, and the public API.
// The executor loop is in executor.cpp, the end of a step in step.cpp.
#include <algorithm>
#include <set>

#include <torch/torch.h>

#include "engine_impl.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/schedule/step_end.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {
namespace {

// For each tie key, the stages holding one of its positions (ascending), keys in sorted order.
std::map<std::string, std::vector<int>> tie_stages(const std::vector<LayerSpec>& layers, const Partition& part) {
  std::map<std::string, std::vector<int>> stages;
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    if (!layers[i].tied) continue;
    auto& v = stages[layers[i].tied->key];
    const int s = part.stage_of(i);
    if (v.empty() || v.back() != s) v.push_back(s);
  }
  return stages;
}

}  // namespace

PipelineEngine::PipelineEngine(std::vector<LayerSpec> layers, LossFn loss, OptimizerFactory optimizer,
                               Communicator& comm, EngineOptions options)
    : impl_(std::make_unique<Impl>(comm, std::move(options))) {
  auto& I = *impl_;
  install_counting_allocator();
  CountingScope counting(I.memory);  // the weights and everything else this rank's engine makes
  const Where at_rank{comm.rank()};
  try {
    I.topo = Topology::for_world(comm.world_size(), I.opts.dp);
    if (I.opts.pp > 0) Topology(I.opts.pp, I.opts.dp).check_world(comm.world_size());
    if (I.opts.chunks_per_rank < 0 || I.opts.chunks_per_rank > wire::kMaxLinks)
      throw ConfigError("chunks per rank must be between 0 (the schedule's own) and " +
                        std::to_string(wire::kMaxLinks) + ", got " +
                        std::to_string(I.opts.chunks_per_rank));
    if (I.opts.microbatches > wire::kMaxMicrobatches)
      throw ConfigError("at most " + std::to_string(wire::kMaxMicrobatches) + " micro-batches, got " +
                        std::to_string(I.opts.microbatches));
    if (I.opts.checkpoint != "never" && I.opts.checkpoint != "always" && I.opts.checkpoint != "except_last")
      throw ConfigError("activation checkpointing is always, except_last or never, got '" + I.opts.checkpoint + "'");
  } catch (const ConfigError& e) {
    throw ConfigError(at_rank.prefix() + e.what());
  }
  const int p = I.topo.pp();
  I.position = I.topo.position_of(comm.rank());
  I.replica = I.topo.replica_of(comm.rank());
  std::set<std::string> names;
  for (const auto& l : layers)
    if (!names.insert(l.name).second) throw ConfigError(at_rank.prefix() + "two layers are named '" + l.name + "'");
  // Parameters, traces and checkpoints name an untied layer by its name and a tied weight by its
  // key, so the two must not meet.
  for (const auto& l : layers)
    if (l.tied && names.count(l.tied->key))
      throw ConfigError(at_rank.prefix() + "the tied weight '" + l.tied->key + "' has the name of a layer; give the "
                        "tie another key");
  // The schedule says how many stages there are and where each lives; then the layers are cut.
  const Schedule compute = make_schedule(I.opts.schedule, p, I.opts.microbatches, I.opts.chunks_per_rank);
  const int num_stages = compute.num_stages();
  I.partition = cut_model(layers, compute, I.opts, comm);
  I.loss_fn = std::move(loss);

  const auto& ties = I.ties = tie_stages(layers, I.partition);
  for (const auto& l : layers) I.model_layers.push_back({l.name, l.tied ? l.tied->key : ""});
  std::vector<std::vector<int>> tied_groups;
  for (const auto& [key, st] : ties)
    if (st.size() > 1) tied_groups.push_back(st);
  I.train_schedule = append_step_end(compute, tied_groups, I.topo.dp() > 1);
  validate(I.train_schedule);
  for (const auto& list : I.train_schedule.ranks)
    for (const Action& a : list)
      if (a.op == Op::Weight) I.split_stages.insert(a.stage);
  I.eval_schedule = forward_schedule(I.train_schedule.stage_rank, I.opts.microbatches);

  // This rank's stages; a tied module is built once per rank and shared by its positions.
  std::map<std::string, std::shared_ptr<torch::nn::Module>> tied_modules;
  for (int s : I.train_schedule.stages_of(I.position)) {
    std::vector<LayerPtr> built;
    std::vector<std::string> built_names;
    for (int i = I.partition.begin(s); i < I.partition.end(s); ++i) {
      const LayerSpec& spec = layers[i];
      if (I.opts.layer_seed) torch::manual_seed(*I.opts.layer_seed + static_cast<std::uint64_t>(i));
      if (!spec.tied) {
        built.push_back(spec.factory());
        built_names.push_back(spec.name);
        continue;
      }
      auto& module = tied_modules[spec.tied->key];
      if (!module) module = spec.tied->factory();
      built.push_back(tied_position(*spec.tied, module));
      built_names.push_back(spec.tied->key);
    }
    I.stages[s] = std::make_unique<Stage>(s, num_stages, std::move(built), std::move(built_names));
  }

  // Groups, created in one global order on every rank (each rank joins those it belongs to):
  // the replicas of each position, the positions of each replica, then each tie across ranks by
  // key. A tie whose copies all live on this rank is one module, reduced like any other.
  I.dp_group = comm.new_group("dp/position" + std::to_string(I.position), I.topo.dp_ranks(I.position));
  I.pipe_group = comm.new_group("pipe/replica" + std::to_string(I.replica), I.topo.pipeline_ranks(I.replica));
  std::vector<TiedParams> tied;
  std::set<const void*> tied_tensors;
  for (const auto& [key, st] : ties) {
    std::vector<int> positions;
    for (int s : st) positions.push_back(I.train_schedule.rank_of(s));
    std::sort(positions.begin(), positions.end());
    positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
    if (positions.size() < 2 || !std::binary_search(positions.begin(), positions.end(), I.position)) continue;
    I.tie_groups.push_back(comm.new_group("tie/" + key, I.topo.ranks_of_positions(positions)));
    TiedParams t;
    t.key = key;
    t.group = I.tie_groups.back().get();
    t.counts_for_norm = positions.front() == I.position;
    for (auto& item : tied_modules.at(key)->parameters()) {
      t.params.push_back(item);
      tied_tensors.insert(item.unsafeGetTensorImpl());
    }
    tied.push_back(std::move(t));
  }
  std::vector<at::Tensor> untied;
  const auto named = I.named_parameters();
  for (auto& [name, t] : named) {
    I.params.push_back(t);
    if (!tied_tensors.count(t.unsafeGetTensorImpl())) untied.push_back(t);
  }
  I.reducer = std::make_unique<GradReducer>(std::move(tied), std::move(untied), I.dp_group.get());
  I.reducer->broadcast_initial();

  if (!named.empty() && optimizer) I.optimizer = optimizer(NamedParameters(named.begin(), named.end()));
  if (I.opts.record) I.recorder.sync_clocks(comm);
}

std::string PipelineEngine::Impl::stages_text(int pos) const {
  return trace::stages_label(train_schedule.stages_of(pos));
}

void PipelineEngine::Impl::audit_ties() const {
  reducer->audit_ties(here(), [&](int r) {
    return stages_text(topo.position_of(r)) + " replica " + std::to_string(topo.replica_of(r)) + " (rank " +
           std::to_string(r) + ")";
  });
}

std::vector<std::pair<std::string, const Layer*>> PipelineEngine::Impl::named_modules() const {
  std::vector<std::pair<std::string, const Layer*>> out;
  std::set<std::string> seen;
  for (const auto& [index, st] : stages)
    for (const auto& item : st->named_modules())
      if (seen.insert(item.first).second) out.push_back(item);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> PipelineEngine::Impl::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;  // a tied weight held by two of this rank's stages is one tensor
  for (const auto& [index, st] : stages)
    for (auto& [name, t] : st->named_parameters())
      if (seen.insert(t.unsafeGetTensorImpl()).second) out.emplace_back(name, t);
  return out;
}

PipelineEngine::~PipelineEngine() = default;

StepResult PipelineEngine::train_batch(const Payload& inputs, const Payload& targets) {
  auto& I = *impl_;
  CountingScope counting(I.memory);
  I.check_usable();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& [index, st] : I.stages) st->train(true);
  // Gradients start undefined, as PyTorch's zero_grad(set_to_none=True): the first micro-batch's
  // backward then writes them instead of adding to zeros (no memset, one pass less), and the
  // optimizer skips a parameter that got no gradient.
  for (auto& [name, p] : I.named_parameters()) p.mutable_grad().reset();
  try {
    I.begin_step(inputs, targets, true);
    I.run(I.train_schedule);  // ends with STEP: reductions, norm, clipping, optimizer
  } catch (const NonFiniteError&) {
    throw;  // every rank threw it at the same point: the ranks are in step, the engine usable
  } catch (const std::exception& e) {
    I.abandon_step(e.what());
    throw;
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (I.recorder.on()) {
    std::vector<trace::RankInfo> ranks;
    for (int r = 0; r < I.topo.world_size(); ++r)
      ranks.push_back({r, I.train_schedule.stages_of(I.topo.position_of(r)), I.topo.replica_of(r)});
    I.last_trace = I.recorder.gather(I.comm, I.steps_done, ranks);
  }
  const auto t2 = std::chrono::steady_clock::now();
  return {I.step_loss,
          I.peak_held,
          I.memory_peak,
          I.activation_peak,
          I.grad_norm,
          I.reduce_seconds,
          std::chrono::duration<double>(t2 - t0).count(),
          std::chrono::duration<double>(t2 - t1).count(),
          I.skipped};
}

EvalResult PipelineEngine::eval_batch(const Payload& inputs, const Payload& targets) {
  auto& I = *impl_;
  CountingScope counting(I.memory);
  I.check_usable();
  for (auto& [index, st] : I.stages) st->train(false);
  EvalResult r;
  try {
    I.begin_step(inputs, targets, false);
    I.run(I.eval_schedule);
  } catch (const std::exception& e) {
    I.abandon_step(e.what());
    throw;
  }
  if (I.holds_last()) {
    std::vector<Payload> parts;
    for (auto& [slot, out] : I.outputs)
      if (slot.first == I.num_stages() - 1) parts.push_back(std::move(out));
    r.outputs = gather_microbatches(parts);
  }
  I.outputs.clear();
  I.start_loss_share();
  I.finish_loss_share();
  r.loss = I.step_loss;
  return r;
}

void PipelineEngine::audit_ties() {
  auto& I = *impl_;
  I.audit_ties();
}

void PipelineEngine::set_recording(bool on) {
  if (on && !impl_->recorder.synced()) impl_->recorder.sync_clocks(impl_->comm);
  impl_->recorder.set_on(on);
  if (!on) impl_->last_trace = {};
}

const trace::StepTrace& PipelineEngine::last_trace() const { return impl_->last_trace; }

std::int64_t PipelineEngine::step() const { return impl_->steps_done; }
int PipelineEngine::stage() const { return impl_->first_stage(); }
std::vector<int> PipelineEngine::stages() const { return impl_->train_schedule.stages_of(impl_->position); }
int PipelineEngine::replica() const { return impl_->replica; }
int PipelineEngine::num_stages() const { return impl_->num_stages(); }
int PipelineEngine::rank_of_stage(int stage, int replica) const {
  return impl_->topo.rank(impl_->train_schedule.rank_of(stage), replica);
}
const Topology& PipelineEngine::topology() const { return impl_->topo; }
bool PipelineEngine::is_first_stage() const { return impl_->holds_first(); }
bool PipelineEngine::is_last_stage() const { return impl_->holds_last(); }
const Schedule& PipelineEngine::schedule() const { return impl_->train_schedule; }
const Partition& PipelineEngine::partition() const { return impl_->partition; }
const EngineOptions& PipelineEngine::options() const { return impl_->opts; }
std::vector<std::pair<std::string, at::Tensor>> PipelineEngine::named_parameters() const {
  return impl_->named_parameters();
}
torch::optim::Optimizer* PipelineEngine::optimizer() { return impl_->optimizer.get(); }

}  // namespace tpipe
