// The layout planner behind `tpipe plan`: given what profiling measured of each layer, a number
// of ranks, a global batch and the memory of a rank, it predicts the step time and the memory of
// every layout (pipeline depth x data-parallel replicas, micro-batches, schedule, stages per
// rank, cut, activation checkpointing) with the schedule simulator and a memory model, and ranks
// them. Pure and torch-free: the measurements come in as LayerFacts (profile.h makes them).
//
//   tpipe::PlanRequest req;
//   req.layers = facts; req.ranks = 8; req.global_batch = 256; req.memory_per_rank = 16e9;
//   for (const auto& l : tpipe::plan_layouts(req)) std::cout << l.step_s << "  " << l.flags() << "\n";
//
// The model, per micro-batch of `rows` rows (every measurement scales linearly from the sample's
// rows; a stage's numbers are sums over its layers):
//   time     (every cost x compute_slowdown when ranks > 1)
//            F = forward; B = backward, plus one more forward for a checkpointed micro-batch
//            (except_last: (m-1)/m of one, the simulator taking one cost per stage); a schedule
//            that splits the backward (zb-h1, zb-v) gives B and W the profile's measured split
//            (input_grad_s, weight_grad_s), or without one W = weight_share x backward and B the
//            rest (stage 0: everything in W). The action that sends a message also pays for
//            starting it (comm.sending). comm = one message of the largest output crossing
//            ranks (plan_comm.h: measured when `comm` holds it, else message_latency_s +
//            bytes / bytes_per_s).
//   step     simulated makespan (with more ranks than `cores`, the ranks of all replicas share
//            the cores: shared_cores_makespan, compute_sim.h)
//            + (dp > 1) the all-reduce of the rank with the most weight bytes in groups of dp,
//            not overlapped (allreduce_s)
//            + the step's end (step_end_s), one collective after another: the tied weights'
//            gradients (tied_bytes, in groups of 2 x dp, when the first and last stage are on
//            different ranks), the gradient norm (8 bytes in groups of pp, pp > 1) and, when
//            record_every_step, the recorder's gather of the step's events (world, 4 KiB)
//            (all-reduces as plan_comm.h: measured lines, or a ring at the fixed numbers)
//            + the optimizer's step on that rank: its weight bytes x optimizer_s_per_weight_byte.
//   memory   per rank: weights x (2 + optimizer_bytes_per_weight_byte) (weights, gradients,
//            optimizer state) + the peak of the activations it holds while it runs its actions
//            in order: a forward keeps the stage input (the previous layer's output; none for
//            stage 0) and, unless checkpointed, the stage's activations; a checkpointed
//            micro-batch recomputes them during its B; all of it is freed after the backward
//            (after W when the schedule splits it, as the weight gradients need the activations).
//            With one stage per rank and no checkpointing this is in-flight x (input +
//            activations); with "always" at most in-flight x input + one micro-batch's
//            activations; with "except_last" one micro-batch's activations more.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "tpipe/partition.h"
#include "tpipe/plan_comm.h"

namespace tpipe {

struct PlanRequest {
  std::vector<LayerFacts> layers;  // profiled (rows > 0), one per layer, in model order
  // The same layers profiled on fewer rows (empty: times proportional to rows). Then a layer's
  // forward and backward take a + b x rows on a micro-batch, the line through the two
  // measurements (b, a >= 0): what an action costs whatever its size shows at small micro-batches.
  std::vector<LayerFacts> layers_fewer_rows;
  int ranks = 1;                   // pp x dp
  int global_batch = 1;            // rows per optimizer step = dp x microbatches x rows per micro-batch
  double memory_per_rank = std::numeric_limits<double>::infinity();  // bytes; layouts above it are
                                                                     // kept, marked as not fitting
  double optimizer_bytes_per_weight_byte = 2;  // Adam / AdamW: two moments; SGD: 0
  std::vector<std::string> schedules = {"gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"};
  std::vector<std::string> partitions = {"uniform", "parameters", "profile"};
  std::vector<std::string> checkpoints = {"never", "except_last", "always"};
  int max_microbatches = 64;
  double message_latency_s = 50e-6;  // per point-to-point message between ranks
  double bytes_per_s = 2e9;          // point-to-point and all-reduce bandwidth
  double weight_share = 0.5;         // of a layer's backward that is W when a schedule splits it
  double optimizer_s_per_weight_byte = 0;  // the optimizer's step, timed (0: free)
  CommCosts comm;                    // measured on the ranks (empty: the fixed numbers above)
  // How much slower the ranks compute beside each other than alone, beyond what sharing `cores`
  // evenly explains (time-slicing, shared caches and memory): every action's and the optimizer's
  // cost is multiplied by it when ranks > 1. Measured with the communication (1: not measured).
  double compute_slowdown = 1;
  double tied_bytes = 0;             // weights shared by the first and the last layer (a GPT's wte)
  bool record_every_step = false;    // tpipe train records every step (its metrics and report)
  // Cores the ranks share (0: each rank has its own). With more ranks than cores, the ranks
  // computing at a moment share them evenly, and a rank idle in its bubble leaves its share.
  double cores = 0;
};

// The partition_method of a "profile" cut made under the memory cap (per-layer memory estimated
// for the layout, the cap divided among a rank's stages). tpipe train has no such method, so
// flags() gives its layer counts instead.
inline constexpr char kProfileUnderCap[] = "profile-capped";

struct Layout {
  int pp = 1, dp = 1, microbatches = 1, chunks = 1;  // chunks: stages per rank
  int microbatch_rows = 1;                           // global_batch / (dp x microbatches)
  std::string schedule, partition_method, checkpoint;
  Partition partition;  // the cut it uses, pp x chunks stages
  double step_s = 0;    // pipeline_s + allreduce_s + step_end_s + optimizer_s
  double pipeline_s = 0, allreduce_s = 0, step_end_s = 0, optimizer_s = 0, bubble = 0;
  double peak_memory_bytes = 0;  // of the fullest rank
  int fullest_rank = 0;          // its pipeline position (the lowest of equals)
  std::vector<double> memory_bytes_per_rank;  // by pipeline position
  bool fits = true;              // peak_memory_bytes <= memory_per_rank

  // The tpipe train flags that run it: "--stages 2 --dp 1 --microbatches 8 --microbatch-size 4
  // --schedule 1f1b --partition profile --checkpoint never", with "--virtual-stages V" after the
  // schedule when chunks > 1, and the cut's layer counts ("3,3,2") for a kProfileUnderCap cut.
  std::string flags() const;
};

// Every layout worth trying: each pp dividing ranks; each schedule (pp = 1: only "1f1b", which on
// one rank is gradient accumulation with one micro-batch in flight; schedules make_schedule
// refuses for pp, and layouts with more stages than layers, are left out) at its default stages
// per rank; each number of micro-batches up to max_microbatches that divides global_batch / dp;
// each checkpoint mode; each partition method, cuts that come out the same counted once, plus a
// kProfileUnderCap cut when memory_per_rank is finite and "profile" is asked for. Ranked: those
// that fit first, then by step_s (equal to 12 significant digits counts as a tie), fewer
// micro-batches, less memory, then search order (pp, schedule, micro-batches, checkpoint, cut).
// Throws ConfigError for ranks, global_batch or max_microbatches < 1, no layers, a layer not
// profiled or with a negative or non-finite measurement, an unknown schedule, partition method or
// checkpoint mode, empty lists, a bandwidth <= 0, a latency < 0, a weight_share outside [0, 1],
// or when no layout is possible at all (the message says why).
std::vector<Layout> plan_layouts(const PlanRequest& request);

// The prediction for one layout: `choice` gives pp, dp, microbatches, chunks (0: the schedule's
// default), schedule, checkpoint, and partition_method (the cut is made from it) or the cut
// itself in `partition` (then partition_method only names it). microbatch_rows, the times and
// the memory are filled in. Throws ConfigError when the request or the layout is not valid
// (pp x dp != ranks, a batch that does not divide, a schedule make_schedule refuses).
Layout predict_layout(const PlanRequest& request, const Layout& choice);

}  // namespace tpipe
