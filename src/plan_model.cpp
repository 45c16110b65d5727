// The planner's model of one layout: the simulator's costs, the all-reduce and the memory of each
// rank (formulas in plan.h). Every sum over a stage's layers runs from its first layer to its
// last, so numbers that tests compute by hand compare exactly.
#include "plan_model.h"

#include <algorithm>
#include <cmath>

namespace tpipe::detail {
namespace {

double stage_sum(const std::vector<double>& v, const Partition& cut, int stage) {
  double sum = 0;
  for (int l = cut.begin(stage); l < cut.end(stage); ++l) sum += v[l];
  return sum;
}

// What a stage receives: the output of the layer before it. Stage 0's input (token ids in the
// GPT) is small next to activations and not measured, so it counts as nothing.
double stage_input(const ScaledLayers& layers, const Partition& cut, int stage) {
  return stage == 0 ? 0.0 : layers.output[cut.begin(stage) - 1];
}

// The share of a forward that a backward recomputes, on average over the step's micro-batches.
double recompute_share(const std::string& checkpoint, int m) {
  if (checkpoint == "always") return 1;
  if (checkpoint == "except_last") return static_cast<double>(m - 1) / m;
  return 0;
}

}  // namespace

ScaledLayers scale_layers(const PlanRequest& request, int rows) {
  ScaledLayers out;
  const double state_factor = 2 + request.optimizer_bytes_per_weight_byte;
  const bool line = request.layers_fewer_rows.size() == request.layers.size();
  for (std::size_t i = 0; i < request.layers.size(); ++i) {
    const LayerFacts& f = request.layers[i];
    const double k = static_cast<double>(rows) / f.rows;
    // Through (few.rows, t_few) and (f.rows, t): slope and intercept kept >= 0.
    auto at_rows = [&](double t, double t_few) {
      const LayerFacts& few = request.layers_fewer_rows[i];
      const double slope = std::max(0.0, (t - t_few) / (f.rows - few.rows));
      return std::max(0.0, t - slope * f.rows) + slope * rows;
    };
    out.forward.push_back(line ? at_rows(f.forward_s, request.layers_fewer_rows[i].forward_s) : f.forward_s * k);
    out.backward.push_back(line ? at_rows(f.backward_s, request.layers_fewer_rows[i].backward_s) : f.backward_s * k);
    out.input_grad.push_back(line ? at_rows(f.input_grad_s, request.layers_fewer_rows[i].input_grad_s)
                                  : f.input_grad_s * k);
    out.weight_grad.push_back(line ? at_rows(f.weight_grad_s, request.layers_fewer_rows[i].weight_grad_s)
                                   : f.weight_grad_s * k);
    out.activation.push_back(f.activation_bytes * k);
    out.output.push_back(f.output_bytes * k);
    out.state.push_back(f.parameter_bytes * state_factor);
    out.weights.push_back(f.parameter_bytes);
  }
  return out;
}

bool checkpointed(const std::string& mode, int mb, int m) {
  return mode == "always" || (mode == "except_last" && mb < m - 1);
}

bool splits_backward(const Schedule& s) {
  for (const auto& actions : s.ranks)
    for (const Action& a : actions)
      if (a.op == Op::Weight) return true;
  return false;
}

Costs pipeline_costs(const PlanRequest& request, const ScaledLayers& layers, const Partition& cut,
                     const Schedule& s, const std::string& checkpoint) {
  Costs c;
  const bool split = splits_backward(s);
  const double again = recompute_share(checkpoint, s.num_microbatches);
  const double slower = request.ranks > 1 ? request.compute_slowdown : 1.0;
  const int stages = cut.num_stages();
  for (int st = 0; st < stages; ++st) {
    // The action that sends pays for starting the send: F its output, B its input's gradient.
    const bool sends_on = st + 1 < stages && s.rank_of(st + 1) != s.rank_of(st);
    const bool sends_back = st > 0 && s.rank_of(st - 1) != s.rank_of(st);
    const double f = slower * stage_sum(layers.forward, cut, st);
    const double b = slower * stage_sum(layers.backward, cut, st);
    const double send_f = sends_on ? sending_seconds(request.comm, layers.output[cut.end(st) - 1]) : 0.0;
    const double send_b = sends_back ? sending_seconds(request.comm, layers.output[cut.begin(st) - 1]) : 0.0;
    c.forward_by_stage.push_back(f + send_f);
    if (!split) {
      c.backward_by_stage.push_back(b + again * f + send_b);
      continue;
    }
    // The first stage's inputs need no gradient, so the engine leaves its B empty and runs the
    // whole backward in W (split_backward.h); the recomputation runs in B all the same. Measured
    // B and W (which together cost more than the whole backward) when the profile has them, else
    // the whole backward shared by weight_share.
    const double in = slower * stage_sum(layers.input_grad, cut, st);
    const double wt = slower * stage_sum(layers.weight_grad, cut, st);
    const bool measured = in + wt > 0;
    const double w = st == 0 ? (measured ? in + wt : b) : measured ? wt : request.weight_share * b;
    const double rest = st == 0 ? 0.0 : measured ? in : b - w;
    c.backward_by_stage.push_back(rest + again * f + send_b);
    c.weight_by_stage.push_back(w);
  }
  double largest = 0;  // the simulator takes one comm latency: the largest message sets it
  for (int st = 0; st + 1 < cut.num_stages(); ++st)
    if (s.rank_of(st) != s.rank_of(st + 1)) largest = std::max(largest, layers.output[cut.end(st) - 1]);
  c.comm = message_seconds(request.comm, largest, request.message_latency_s, request.bytes_per_s);
  return c;
}

double most_weight_bytes(const ScaledLayers& layers, const Partition& cut, const Schedule& s) {
  double most = 0;
  for (int r = 0; r < s.num_ranks(); ++r) {
    double bytes = 0;
    for (int st : s.stages_of(r)) bytes += stage_sum(layers.weights, cut, st);
    most = std::max(most, bytes);
  }
  return most;
}

double allreduce_seconds(const PlanRequest& request, const ScaledLayers& layers, const Partition& cut,
                         const Schedule& s, int dp) {
  if (dp <= 1) return 0;
  return all_reduce_seconds(request.comm, dp, most_weight_bytes(layers, cut, s), request.message_latency_s,
                            request.bytes_per_s);
}

double step_end_seconds(const PlanRequest& request, const Schedule& s, int dp) {
  auto reduce = [&](int group, double bytes) {
    return all_reduce_seconds(request.comm, group, bytes, request.message_latency_s, request.bytes_per_s);
  };
  const int pp = s.num_ranks();
  double t = 0;
  if (request.tied_bytes > 0 && s.rank_of(0) != s.rank_of(s.num_stages() - 1)) t += reduce(2 * dp, request.tied_bytes);
  t += reduce(pp, 8);  // the gradient norm, a double
  if (request.record_every_step) t += reduce(pp * dp, 4096);
  return t;
}

std::vector<double> memory_per_rank(const ScaledLayers& layers, const Partition& cut, const Schedule& s,
                                    const std::string& checkpoint) {
  const int m = s.num_microbatches;
  const bool split = splits_backward(s);
  std::vector<double> full_of, input_of;  // per stage, one micro-batch
  for (int st = 0; st < cut.num_stages(); ++st) {
    full_of.push_back(stage_sum(layers.activation, cut, st));
    input_of.push_back(stage_input(layers, cut, st));
  }
  std::vector<double> out;
  for (int r = 0; r < s.num_ranks(); ++r) {
    double state = 0;
    for (int st : s.stages_of(r)) state += stage_sum(layers.state, cut, st);
    // Held activations depend only on the order of the rank's own actions, not on timing.
    double live = 0, peak = 0;
    for (const Action& a : s.ranks[r]) {
      if (a.op != Op::Forward && a.op != Op::Backward && a.op != Op::Weight) continue;
      const double full = full_of[a.stage];
      const double input = input_of[a.stage];
      const bool ck = checkpointed(checkpoint, a.mb, m);
      if (a.op == Op::Forward) {
        live += input + (ck ? 0.0 : full);
        peak = std::max(peak, live);
        continue;
      }
      if (a.op == Op::Backward && ck) {  // the recomputed forward
        live += full;
        peak = std::max(peak, live);
      }
      // Freed by the op that ends the micro-batch's backward on this stage.
      if (a.op == Op::Weight || !split) live -= input + full;
    }
    out.push_back(state + peak);
  }
  return out;
}

LayerMemoryCap layer_memory_cap(const PlanRequest& request, const ScaledLayers& layers, const Schedule& s,
                                const std::string& checkpoint) {
  // The most micro-batches a stage holds at once: its rank's, shared among the rank's stages.
  const bool split = splits_backward(s);
  const int chunks = s.num_stages() / s.num_ranks();
  int held = 0;
  for (const auto& actions : s.ranks) {
    int now = 0, peak = 0;
    for (const Action& a : actions) {
      if (a.op == Op::Forward) peak = std::max(peak, ++now);
      if (a.op == (split ? Op::Weight : Op::Backward)) --now;
    }
    held = std::max(held, (peak + chunks - 1) / chunks);
  }
  LayerMemoryCap out;
  for (std::size_t l = 0; l < layers.state.size(); ++l) {
    const double act = layers.activation[l];
    const double kept = checkpoint == "always" ? act : checkpoint == "except_last" ? 2 * act : held * act;
    out.memory.push_back(layers.state[l] + kept);
  }
  out.cap = request.memory_per_rank / chunks;
  return out;
}

}  // namespace tpipe::detail
