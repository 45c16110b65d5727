// PipelineEngine::save and ::load (see engine.h and checkpoint/manifest.h for the format).
//
// Both are collective and go in phases separated by an all-gather of one text per rank (an
// error, or what the rank wrote), so that every rank reaches the same verdict and no rank is
// left waiting for one that failed:
//
//   save:  rank 0 clears <root>/.partial-step-N  | every writer writes its files | rank 0 writes
//          the manifest and renames the directory into place, then `latest`
//   load:  every rank reads and checks all it needs (nothing changed yet) | all apply, or all throw
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>

#include "engine_impl.h"
#include "tpipe/checkpoint/directory.h"
#include "tpipe/checkpoint/tensor_file.h"
#include "tpipe/util/files.h"
#include "../checkpoint/optimizer_state.h"

namespace tpipe {
namespace {

using checkpoint::Manifest;
using checkpoint::NamedTensors;
using checkpoint::TensorInfo;

std::vector<TensorInfo> infos(const NamedTensors& ts) {
  std::vector<TensorInfo> out;
  for (const auto& [name, t] : ts) out.push_back({name, t.sizes().vec(), c10::toString(t.scalar_type())});
  return out;
}

std::string rng_file(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rng/rank-%05d.pt", rank);
  return buf;
}

// Runs f; returns "" or its error, prefixed with where it happened unless it already says.
template <class F>
std::string attempt(const Where& where, F f) {
  try {
    f();
    return "";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return what.rfind("[rank", 0) == 0 ? what : where.prefix() + what;
  }
}

// Every rank's outcome of a phase; throws the first error (lowest rank) on every rank.
std::vector<std::string> agree(Communicator& comm, const std::string& mine, const std::string& phase) {
  auto all = comm.world().all_gather_text(mine, phase);
  for (const auto& text : all)
    if (text.rfind("error:", 0) == 0) throw ConfigError(text.substr(6));
  return all;
}

std::string outcome(const std::string& error, const std::string& report = "") {
  return error.empty() ? report : "error:" + error;
}

at::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const at::Tensor& state, at::Generator gen = at::detail::getDefaultCPUGenerator()) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// The generators a layer draws from that are its own (the GPT's dropout masks), not the process's:
// their states are saved with the layer, as "~rng.0", "~rng.1", ... beside its tensors, so a
// resumed run draws the masks an uninterrupted one would. ('~' starts no parameter name.)
std::vector<at::Generator> own_generators(const Layer& layer) {
  std::vector<at::Generator> own;
  const auto* process = at::detail::getDefaultCPUGenerator().unsafeGetGeneratorImpl();
  for (auto& g : layer.generators())
    if (g.unsafeGetGeneratorImpl() != process) own.push_back(g);
  return own;
}

std::string rng_entry(std::size_t i) { return checkpoint::kRngPrefix + std::to_string(i); }

// A module's tensors against what the checkpoint says it holds.
std::string compare(const std::string& dir, const std::string& key, const char* kind,
                    const std::vector<TensorInfo>& saved, const NamedTensors& model) {
  std::map<std::string, const TensorInfo*> by_name;
  for (const auto& t : saved) by_name[t.name] = &t;
  for (const auto& [name, t] : model) {
    auto it = by_name.find(name);
    const TensorInfo mine{name, t.sizes().vec(), c10::toString(t.scalar_type())};
    if (it == by_name.end())
      return "checkpoint " + dir + ": layer '" + key + "' has no " + kind + " '" + name + "' (the model's is " +
             checkpoint::describe(mine) + ")";
    if (it->second->shape != mine.shape || it->second->dtype != mine.dtype)
      return "checkpoint " + dir + ": layer '" + key + "' " + kind + " '" + name + "' is " +
             checkpoint::describe(*it->second) + " there, " + checkpoint::describe(mine) + " in the model";
    by_name.erase(it);
  }
  if (!by_name.empty())
    return "checkpoint " + dir + ": layer '" + key + "' has a " + kind + " '" + by_name.begin()->first +
           "' that the model's layer does not have";
  return "";
}

}  // namespace

CheckpointInfo PipelineEngine::save(const std::string& root, const std::string& extra_json) {
  auto& I = *impl_;
  CountingScope counting(I.memory);
  I.check_usable();
  const int rank = I.comm.rank(), s = I.first_stage();
  const std::string name = checkpoint::step_dir_name(I.steps_done);
  const std::string partial = root + "/" + checkpoint::partial_dir_name(I.steps_done);
  const Where where{rank, s, -1, "save " + name};

  // 1. A clean directory to write into (an interrupted save may have left one).
  std::string err;
  if (rank == 0)
    err = attempt(where, [&] {
      if (!nlohmann::json::accept(extra_json))  // refused before anything is written
        throw ConfigError("the extra state to save is not valid JSON: " + extra_json.substr(0, 80));
      std::error_code ec;
      std::filesystem::create_directories(root, ec);
      if (ec) throw ConfigError("cannot create the checkpoint directory " + root + ": " + ec.message());
      checkpoint::remove_partials(root);
      std::filesystem::create_directories(partial, ec);
      if (ec) throw ConfigError("cannot create the checkpoint directory " + partial + ": " + ec.message());
    });
  agree(I.comm, outcome(err), "checkpoint: preparing " + partial);

  // 2. Each rank its files: replica 0 the layers it holds (a tied weight on the lowest stage
  //    holding it), every rank its generator state.
  Manifest part;
  err = attempt(where, [&] {
    const std::string kind = checkpoint::optimizer_kind(I.optimizer.get());
    if (I.replica == 0)
      for (const auto& [key, layer] : I.named_modules()) {
        if (auto t = I.ties.find(key); t != I.ties.end() && !I.holds(t->second.front())) continue;
        checkpoint::ModuleEntry& m = part.modules[key];
        const auto params = layer->named_parameters(), buffers = layer->named_buffers();
        m.parameters = infos(params);
        m.buffers = infos(buffers);
        NamedTensors tensors = params, state;
        tensors.insert(tensors.end(), buffers.begin(), buffers.end());
        auto gens = own_generators(*layer);
        for (std::size_t i = 0; i < gens.size(); ++i) {
          std::lock_guard<std::mutex> lock(gens[i].mutex());
          tensors.emplace_back(rng_entry(i), gens[i].get_state());
        }
        if (!tensors.empty()) {
          m.file = "layers/" + checkpoint::file_stem(key) + ".pt";
          part.files[m.file] = checkpoint::write_tensors(partial + "/" + m.file, tensors);
        }
        if (I.optimizer)
          for (const auto& [pname, p] : params) {
            auto fields = checkpoint::optimizer_state(*I.optimizer, p, pname + ".");
            state.insert(state.end(), fields.begin(), fields.end());
          }
        if (!state.empty()) {
          m.optimizer_file = "optimizer/" + checkpoint::file_stem(key) + ".pt";
          part.files[m.optimizer_file] = checkpoint::write_tensors(partial + "/" + m.optimizer_file, state);
        }
      }
    part.optimizer = kind;
    part.files[rng_file(rank)] = checkpoint::write_tensors(partial + "/" + rng_file(rank), {{"cpu", rng_state()}});
  });
  std::vector<std::string> reports;
  try {
    reports = agree(I.comm, outcome(err, checkpoint::to_json(part).dump()), "checkpoint: writing files");
  } catch (const std::exception&) {
    if (rank == 0) attempt(where, [&] { std::filesystem::remove_all(partial); });
    throw;
  }

  // 3. Rank 0: the manifest, then the rename that makes the checkpoint exist.
  Manifest m;
  m.step = I.steps_done;
  m.layout = {I.topo.pp(), I.topo.dp(), {}, I.opts.schedule, I.opts.microbatches};
  for (int st = 0; st < I.num_stages(); ++st) m.layout.partition.push_back(I.partition.size(st));
  m.layers = I.model_layers;
  m.extra = extra_json;
  if (rank == 0)
    err = attempt(where, [&] {
      for (std::size_t r = 0; r < reports.size(); ++r) {
        const Manifest got = checkpoint::manifest_from_json(nlohmann::json::parse(reports[r]),
                                                            "the report of rank " + std::to_string(r));
        m.modules.insert(got.modules.begin(), got.modules.end());
        m.files.insert(got.files.begin(), got.files.end());
        if (!got.optimizer.empty()) m.optimizer = got.optimizer;
      }
      for (const auto& l : m.layers)
        if (!m.modules.count(l.module())) throw Error("no rank wrote module '" + l.module() + "'");
      if (I.optimizer)
        for (const auto& g : I.optimizer->param_groups()) m.learning_rates.push_back(g.options().get_lr());
      write_file_atomic(partial + "/manifest.json", checkpoint::to_json(m).dump(1) + "\n");
      checkpoint::publish_checkpoint(partial, root, name);
    });
  if (rank == 0 && !err.empty()) attempt(where, [&] { std::filesystem::remove_all(partial); });
  agree(I.comm, outcome(err), "checkpoint: publishing " + name);
  return {root + "/" + name, m.step, m.layout.pp, m.layout.dp, m.layout.partition, m.layout.schedule,
          m.layout.microbatches, extra_json, false};
}

CheckpointInfo PipelineEngine::load(const std::string& path) {
  auto& I = *impl_;
  CountingScope counting(I.memory);
  I.check_usable();
  const int rank = I.comm.rank(), s = I.first_stage();
  const Where where{rank, s, -1, "load"};

  // 1. Read and check everything this rank needs; the model is not touched yet.
  struct Assign {
    at::Tensor target, value;
  };
  std::vector<Assign> assigns;
  std::vector<std::pair<at::Tensor, std::map<std::string, at::Tensor>>> states;
  at::Tensor rng;
  std::vector<std::pair<at::Generator, at::Tensor>> draws;  // layers' own generators and their states
  Manifest m;
  // Rank 0 decides which checkpoint (`latest` may move while the ranks look), all read that one.
  std::string dir;
  std::string err;
  if (rank == 0) err = attempt(where, [&] { dir = checkpoint::resolve_checkpoint(path); });
  dir = agree(I.comm, outcome(err, dir), "checkpoint: finding " + path).at(0);
  err = attempt(where, [&] {
    m = checkpoint::read_manifest(dir);
    checkpoint::check_layers(m, I.model_layers, dir);
    const std::string kind = checkpoint::optimizer_kind(I.optimizer.get());
    for (const auto& [key, layer] : I.named_modules()) {
      const checkpoint::ModuleEntry& e = m.modules.at(key);
      const auto params = layer->named_parameters(), buffers = layer->named_buffers();
      for (const auto& diff : {compare(dir, key, "parameter", e.parameters, params),
                               compare(dir, key, "buffer", e.buffers, buffers)})
        if (!diff.empty()) throw ConfigError(diff);
      auto read = [&](const std::string& file) {
        std::map<std::string, at::Tensor> out;
        if (file.empty()) return out;
        if (!m.files.count(file)) throw ConfigError(dir + "/manifest.json is damaged: it has no checksum of " + file);
        for (auto& [n, t] : checkpoint::read_tensors(dir, file, m.files.at(file))) out[n] = t;
        return out;
      };
      auto values = read(e.file);
      NamedTensors targets = params;
      targets.insert(targets.end(), buffers.begin(), buffers.end());
      for (const auto& [n, t] : targets) {
        auto it = values.find(n);
        if (it == values.end() || it->second.sizes() != t.sizes() || it->second.scalar_type() != t.scalar_type())
          throw ConfigError("checkpoint file " + dir + "/" + e.file + " does not hold '" + n + "' as its manifest says");
        assigns.push_back({t, it->second});
      }
      const auto gens = own_generators(*layer);
      for (std::size_t i = 0; i < gens.size(); ++i)
        if (auto it = values.find(rng_entry(i)); it != values.end()) draws.emplace_back(gens[i], it->second);
      if (!I.optimizer) continue;
      if (!e.optimizer_file.empty() && m.optimizer != kind)
        throw ConfigError("checkpoint " + dir + " holds " + m.optimizer + " state; this engine's optimizer is " + kind);
      auto fields = read(e.optimizer_file);
      for (const auto& [pname, p] : params) {
        std::map<std::string, at::Tensor> mine;
        const std::string prefix = pname + ".";
        for (const auto& [n, t] : fields)
          if (n.rfind(prefix, 0) == 0 && n.find('.', prefix.size()) == std::string::npos)
            mine[n.substr(prefix.size())] = t.to(p.device());
        const std::string bad = checkpoint::check_optimizer_state(kind, p, mine);
        if (!bad.empty())
          throw ConfigError("checkpoint file " + dir + "/" + e.optimizer_file + ": the state of '" + key + "." + pname +
                            "': " + bad);
        states.emplace_back(p, std::move(mine));
      }
    }
    const std::string rf = rng_file(rank);
    if (m.layout.pp == I.topo.pp() && m.layout.dp == I.topo.dp() && m.files.count(rf))
      rng = checkpoint::read_tensors(dir, rf, m.files.at(rf)).at(0).second;
  });
  agree(I.comm, outcome(err), "checkpoint: reading " + path);

  // 2. Every rank found what it needs: apply.
  {
    torch::NoGradGuard no_grad;
    for (auto& a : assigns) a.target.copy_(a.value);
  }
  for (auto& [p, fields] : states) checkpoint::set_optimizer_state(*I.optimizer, p, fields);
  // The learning rate a scheduler last set, when the parameter groups are alike.
  if (I.optimizer && m.learning_rates.size() == I.optimizer->param_groups().size())
    for (std::size_t i = 0; i < m.learning_rates.size(); ++i)
      I.optimizer->param_groups()[i].options().set_lr(m.learning_rates[i]);
  if (rng.defined()) set_rng_state(rng);
  for (auto& [gen, state] : draws) set_rng_state(state, gen);
  I.steps_done = m.step;
  return {dir, m.step, m.layout.pp, m.layout.dp, m.layout.partition, m.layout.schedule, m.layout.microbatches,
          m.extra, rng.defined()};
}

}  // namespace tpipe
