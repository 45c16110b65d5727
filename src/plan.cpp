// The layout planner (plan.h): checks the request, enumerates the layouts, predicts each with the
// model of plan_model.cpp and ranks them.
#include "tpipe/plan.h"

#include "tpipe/schedule/compute_sim.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>
#include <string_view>
#include <tuple>
#include <utility>

#include "plan_model.h"
#include "tpipe/error.h"
#include "tpipe/schedule/generators.h"

namespace tpipe {
namespace {

using detail::ScaledLayers;

void require(bool ok, const std::string& what) {
  if (!ok) throw ConfigError("plan: " + what);
}

std::string show(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

bool is_checkpoint_mode(const std::string& c) { return c == "never" || c == "except_last" || c == "always"; }

void check_layer(const LayerFacts& f, std::size_t i) {
  const std::string name = "layer " + std::to_string(i) + " '" + f.name + "'";
  require(f.rows > 0, name + " was not profiled (rows = 0); the planner needs every layer's measurements");
  for (auto [v, what] : {std::pair<double, const char*>{f.parameter_bytes, "parameter_bytes"},
                         {f.forward_s, "forward_s"},
                         {f.backward_s, "backward_s"},
                         {f.input_grad_s, "input_grad_s"},
                         {f.weight_grad_s, "weight_grad_s"},
                         {f.activation_bytes, "activation_bytes"},
                         {f.output_bytes, "output_bytes"}})
    require(std::isfinite(v) && v >= 0, name + ": " + what + " must be a finite number >= 0, got " + show(v));
}

void check_request(const PlanRequest& r) {
  require(r.ranks >= 1, "ranks must be >= 1, got " + std::to_string(r.ranks));
  require(r.global_batch >= 1, "the global batch must be >= 1 rows, got " + std::to_string(r.global_batch));
  require(r.max_microbatches >= 1, "max_microbatches must be >= 1, got " + std::to_string(r.max_microbatches));
  require(!r.layers.empty(), "no layers to place");
  for (std::size_t i = 0; i < r.layers.size(); ++i) check_layer(r.layers[i], i);
  require(r.layers_fewer_rows.empty() || r.layers_fewer_rows.size() == r.layers.size(),
          "layers_fewer_rows must measure every layer, or none: " + std::to_string(r.layers_fewer_rows.size()) +
              " for " + std::to_string(r.layers.size()) + " layers");
  for (std::size_t i = 0; i < r.layers_fewer_rows.size(); ++i) {
    check_layer(r.layers_fewer_rows[i], i);
    require(r.layers_fewer_rows[i].rows < r.layers[i].rows, "layers_fewer_rows: layer " + std::to_string(i) +
                                                                " must be measured on fewer rows than in layers");
  }
  require(r.memory_per_rank > 0, "the memory per rank must be > 0 bytes (infinity: no limit), got " +
                                     show(r.memory_per_rank));
  require(std::isfinite(r.optimizer_bytes_per_weight_byte) && r.optimizer_bytes_per_weight_byte >= 0,
          "optimizer bytes per weight byte must be a finite number >= 0, got " +
              show(r.optimizer_bytes_per_weight_byte));
  require(std::isfinite(r.message_latency_s) && r.message_latency_s >= 0,
          "the message latency must be a finite number of seconds >= 0, got " + show(r.message_latency_s));
  require(r.bytes_per_s > 0, "the bandwidth must be > 0 bytes per second, got " + show(r.bytes_per_s));
  require(std::isfinite(r.compute_slowdown) && r.compute_slowdown >= 1,
          "compute_slowdown must be a finite number >= 1, got " + show(r.compute_slowdown));
  require(std::isfinite(r.tied_bytes) && r.tied_bytes >= 0, "tied_bytes must be a finite number >= 0, got " +
                                                                 show(r.tied_bytes));
  auto measured = [&](const LinearCost& c, const std::string& what) {
    require(std::isfinite(c.latency_s) && c.latency_s >= 0 && std::isfinite(c.bytes_per_s),
            what + " must have a finite latency >= 0 and a finite rate, got " + show(c.latency_s) + " s and " +
                show(c.bytes_per_s) + " bytes/s");
  };
  measured(r.comm.point_to_point, "the measured point-to-point cost");
  for (const auto& [group, cost] : r.comm.all_reduce) {
    require(group >= 2, "a measured all-reduce needs groups of >= 2 ranks, got " + std::to_string(group));
    measured(cost, "the measured all-reduce of " + std::to_string(group));
  }
  require(r.weight_share >= 0 && r.weight_share <= 1, "weight_share must be in [0, 1], got " + show(r.weight_share));
  require(!r.schedules.empty() && !r.partitions.empty() && !r.checkpoints.empty(),
          "the schedules, partition methods and checkpoint modes to try must not be empty");
  const auto& known = schedule_names();
  for (const auto& s : r.schedules)
    require(std::find(known.begin(), known.end(), s) != known.end(), "unknown schedule '" + s + "'");
  for (const auto& c : r.checkpoints)
    require(is_checkpoint_mode(c), "checkpoint modes are never, except_last and always, got '" + c + "'");
  for (const auto& p : r.partitions) {
    // Explicit sizes ("3,3,2") fix the number of stages, which the search varies.
    require(p == "uniform" || partition_weighs_layers(p),
            "partition methods to try are uniform, parameters, profile and type:REGEX, got '" + p + "'");
    partition_from_string(p, 1, r.layers);  // throws for a bad regex, or one matching no layer
  }
}

// The prediction for a layout whose fields up to the cut are set, on its schedule.
Layout predict(const PlanRequest& request, Layout l, const Schedule& s, const ScaledLayers& layers) {
  const Costs costs = detail::pipeline_costs(request, layers, l.partition, s, l.checkpoint);
  const SimResult sim = simulate(s, costs);
  l.pipeline_s = sim.makespan;
  // More ranks than cores: the computing ranks of all replicas share the cores, and a rank idle
  // in its bubble leaves its core to the others.
  if (request.cores > 0 && request.ranks > request.cores)
    l.pipeline_s = shared_cores_makespan(s, costs, request.cores, l.dp);
  l.bubble = sim.bubble;
  l.allreduce_s = detail::allreduce_seconds(request, layers, l.partition, s, l.dp);
  l.step_end_s = detail::step_end_seconds(request, s, l.dp);
  l.optimizer_s = (request.ranks > 1 ? request.compute_slowdown : 1.0) * request.optimizer_s_per_weight_byte *
                  detail::most_weight_bytes(layers, l.partition, s);
  l.step_s = l.pipeline_s + l.allreduce_s + l.step_end_s + l.optimizer_s;
  l.memory_bytes_per_rank = detail::memory_per_rank(layers, l.partition, s, l.checkpoint);
  const auto fullest = std::max_element(l.memory_bytes_per_rank.begin(), l.memory_bytes_per_rank.end());
  l.fullest_rank = static_cast<int>(fullest - l.memory_bytes_per_rank.begin());
  l.peak_memory_bytes = *fullest;
  l.fits = l.peak_memory_bytes <= request.memory_per_rank;
  return l;
}

// The named methods' cuts into `stages`, each different cut once (the first method that makes it).
std::vector<std::pair<std::string, Partition>> named_cuts(const PlanRequest& r, int stages) {
  std::vector<std::pair<std::string, Partition>> cuts;
  for (const auto& method : r.partitions) {
    const Partition p = partition_from_string(method, stages, r.layers);
    const bool seen = std::any_of(cuts.begin(), cuts.end(), [&](const auto& c) { return c.second.bounds == p.bounds; });
    if (!seen) cuts.emplace_back(method, p);
  }
  return cuts;
}

// Single quotes for a shell when a method has characters beyond a plain word ("type:a|b").
std::string shell_word(const std::string& w) {
  const bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view(":_.,-+").find(c) != std::string_view::npos;
  });
  if (plain) return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// step_s to 12 significant digits: times scale linearly with rows, so layouts that differ only in
// how a batch is split often predict the same time up to rounding, and those ties should go to
// the next criteria (fewer micro-batches), not to the last bits of a sum.
double tie_key(double s) {
  if (s == 0 || !std::isfinite(s)) return s;
  const double unit = std::pow(10.0, std::floor(std::log10(std::fabs(s))) - 11);
  return std::round(s / unit) * unit;
}

void rank_layouts(std::vector<Layout>& layouts) {
  std::vector<double> key;
  for (const Layout& l : layouts) key.push_back(tie_key(l.step_s));
  std::vector<std::size_t> order(layouts.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) {
    const Layout &a = layouts[i], &b = layouts[j];
    if (a.fits != b.fits) return a.fits;
    if (key[i] != key[j]) return key[i] < key[j];
    if (a.microbatches != b.microbatches) return a.microbatches < b.microbatches;
    return a.peak_memory_bytes < b.peak_memory_bytes;
  });
  std::vector<Layout> ranked;
  ranked.reserve(layouts.size());
  for (std::size_t i : order) ranked.push_back(std::move(layouts[i]));
  layouts = std::move(ranked);
}

}  // namespace

std::string Layout::flags() const {
  std::string f = "--stages " + std::to_string(pp) + " --dp " + std::to_string(dp) + " --microbatches " +
                  std::to_string(microbatches) + " --microbatch-size " + std::to_string(microbatch_rows) +
                  " --schedule " + schedule;
  if (chunks > 1) f += " --virtual-stages " + std::to_string(chunks);
  f += " --partition " + (partition_method == kProfileUnderCap ? to_string(partition) : shell_word(partition_method));
  return f + " --checkpoint " + checkpoint;
}

Layout predict_layout(const PlanRequest& request, const Layout& choice) {
  check_request(request);
  require(choice.pp >= 1 && choice.dp >= 1 && choice.pp * choice.dp == request.ranks,
          "pp " + std::to_string(choice.pp) + " x dp " + std::to_string(choice.dp) + " must be the " +
              std::to_string(request.ranks) + " ranks");
  require(choice.microbatches >= 1 && request.global_batch % (choice.dp * choice.microbatches) == 0,
          "the global batch " + std::to_string(request.global_batch) + " does not split into dp " +
              std::to_string(choice.dp) + " x " + std::to_string(choice.microbatches) + " micro-batches");
  require(is_checkpoint_mode(choice.checkpoint),
          "checkpoint modes are never, except_last and always, got '" + choice.checkpoint + "'");
  Layout l = choice;
  if (l.chunks == 0) l.chunks = default_chunks(l.schedule);
  const Schedule s = make_schedule(l.schedule, l.pp, l.microbatches, l.chunks);
  const int layers = static_cast<int>(request.layers.size());
  if (l.partition.bounds.empty()) l.partition = partition_from_string(l.partition_method, s.num_stages(), request.layers);
  require(l.partition.num_stages() == s.num_stages() && l.partition.num_layers() == layers,
          "the cut " + to_string(l.partition) + " is not " + std::to_string(s.num_stages()) + " stages of the " +
              std::to_string(layers) + " layers");
  l.microbatch_rows = request.global_batch / (l.dp * l.microbatches);
  return predict(request, l, s, detail::scale_layers(request, l.microbatch_rows));
}

std::vector<Layout> plan_layouts(const PlanRequest& request) {
  check_request(request);
  const int layers = static_cast<int>(request.layers.size());
  const bool capped = std::isfinite(request.memory_per_rank) &&
                      std::find(request.partitions.begin(), request.partitions.end(), "profile") != request.partitions.end();
  std::map<int, std::vector<std::pair<std::string, Partition>>> cuts_by_stages;
  std::vector<Layout> out;
  // The actions of the schedules tried per (pp, m, chunks): two names for the same actions (gpipe
  // and 1f1b of one micro-batch) are one layout, named by the first.
  std::map<std::tuple<int, int, int>, std::vector<std::vector<std::vector<Action>>>> tried;
  for (int pp = 1; pp <= request.ranks; ++pp) {
    const int dp = request.ranks / pp;
    if (request.ranks % pp != 0 || request.global_batch % dp != 0) continue;
    // One stage on one rank: every schedule is gradient accumulation; 1F1B holds one micro-batch.
    const std::vector<std::string> names = pp == 1 ? std::vector<std::string>{"1f1b"} : request.schedules;
    for (const auto& name : names) {
      const int chunks = pp == 1 ? 1 : default_chunks(name);
      const int stages = pp * chunks;
      if (stages > layers) continue;
      auto& cuts = cuts_by_stages[stages];
      if (cuts.empty()) cuts = named_cuts(request, stages);
      for (int m = 1; m <= request.max_microbatches; ++m) {
        if ((request.global_batch / dp) % m != 0) continue;
        Schedule s;
        try {
          s = make_schedule(name, pp, m, chunks);
        } catch (const ConfigError&) {
          continue;  // a shape this schedule does not run
        } catch (const ScheduleError&) {
          continue;
        }
        auto& same_shape = tried[{pp, m, chunks}];
        if (std::find(same_shape.begin(), same_shape.end(), s.ranks) != same_shape.end()) continue;
        same_shape.push_back(s.ranks);
        const int rows = request.global_batch / (dp * m);
        const ScaledLayers scaled = detail::scale_layers(request, rows);
        for (const auto& checkpoint : request.checkpoints) {
          if (checkpoint == "except_last" && m == 1) continue;  // nothing checkpointed: "never" again
          auto candidates = cuts;
          if (capped) {
            try {
              const auto cap = detail::layer_memory_cap(request, scaled, s, checkpoint);
              const Partition p = partition_from_string("profile", stages, request.layers, cap.memory, cap.cap);
              if (std::none_of(candidates.begin(), candidates.end(),
                               [&](const auto& c) { return c.second.bounds == p.bounds; }))
                candidates.emplace_back(kProfileUnderCap, p);
            } catch (const ConfigError&) {
              // No cut fits the estimate; the named cuts are still predicted (and marked).
            }
          }
          for (const auto& [method, cut] : candidates) {
            Layout l;
            l.pp = pp;
            l.dp = dp;
            l.microbatches = m;
            l.chunks = chunks;
            l.microbatch_rows = rows;
            l.schedule = name;
            l.partition_method = method;
            l.checkpoint = checkpoint;
            l.partition = cut;
            out.push_back(predict(request, std::move(l), s, scaled));
          }
        }
      }
    }
  }
  require(!out.empty(), "no layout for " + std::to_string(request.ranks) + " ranks, a global batch of " +
                            std::to_string(request.global_batch) + " rows and " + std::to_string(layers) +
                            " layers: a layout needs pp dividing the ranks, pp x stages per rank <= the layers, "
                            "and the global batch divisible by dp = ranks / pp");
  rank_layouts(out);
  return out;
}

}  // namespace tpipe
