// Schedule generators: pure functions (ranks, [chunks,] micro-batches) -> Schedule. naive, gpipe,
// 1f1b and zb-h1 put one stage on each rank; interleaved-1f1b and zb-v put several ("chunks",
// virtual stages) on each rank. They produce compute actions only; insert_comms() adds the sends
// and receives between stages on different ranks (same-rank neighbours hand over directly).
//
// GPipe, p = 3, m = 4 (each box one unit of time, backward = 2 units):
//   rank 0 | 0F0 0F1 0F2 0F3  .   .   .   .   .  0B0 0B1 0B2 0B3
//   rank 1 |  .  1F0 1F1 1F2 1F3  .   .  1B0 1B1 1B2 1B3
//   rank 2 |  .   .  2F0 2F1 2F2 2F3 2B0 2B1 2B2 2B3
//
// 1F1B, p = 3, m = 4: stage s runs min(p-1-s, m) warm-up forwards, then alternates one forward
// and one backward, then drains the remaining backwards; at most min(p-s, m) micro-batches are
// in flight on stage s (GPipe: m).
//   rank 0 | 0F0 0F1 0F2 0B0 0F3 0B1 0B2 0B3
//   rank 1 | 1F0 1F1 1B0 1F2 1B1 1F3 1B2 1B3
//   rank 2 | 2F0 2B0 2F1 2B1 2F2 2B2 2F3 2B3
//
// ZB-H1, p = 3, m = 4 (F = B = W = 1 unit; W is the weight-gradient half of the backward): 1F1B's
// F and B, and stage s runs W(k) after B(k + s), so its last idle slots are filled with W's.
// Makespan 3m + p - 1 for m >= p, i.e. bubble (p-1)/(3m+p-1), a third of 1F1B's idle time.
//   rank 0 | 0F0 0F1 0F2 0B0 0W0 0F3 0B1 0W1 0B2 0W2 0B3 0W3
//   rank 1 | 1F0 1F1 1B0 1F2 1B1 1W0 1F3 1B2 1W1 1B3 1W2 1W3
//   rank 2 | 2F0 2B0 2F1 2B1 2F2 2B2 2W0 2F3 2B3 2W1 2W2 2W3
//
// Interleaved 1F1B (Narayanan et al., "Efficient Large-Scale Language Model Training on GPU
// Clusters Using Megatron-LM", SC'21, section 2.2.2), p ranks, v chunks: stage c*p + r on rank r,
// so a micro-batch visits every rank v times. Micro-batches go in rounds of p: within a round a
// rank runs chunk 0 of the round's micro-batches, then chunk 1, ..., and backwards mirror it
// (chunk v-1 first). Rank r runs (v-1)*g + 2(p-1-r) warm-up forwards (g = the first round's size),
// then alternates one forward and one backward, then drains. p = 2, v = 2, m = 4 (F = 1, B = 2
// per chunk; stages 0, 2 on rank 0 and 1, 3 on rank 1):
//   rank 0 | 0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3
//   rank 1 | 1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3
// Each rank idles 3(p-1) units, a v-th of 1F1B's, so the bubble is (p-1)/(v*m+p-1).
// Any m >= 1 works: when p does not divide m, the m mod p micro-batches left over join the FIRST
// round (rounds of p + m mod p, p, p, ...), which keeps the closed-form bubble for every m >= p
// at the price of (v-1)*(m mod p) more warm-up forwards; with m < p there is one round of m, and
// each of the v-1 returns to rank 0 waits a full trip around the p ranks: makespan
// 3((v-1)p + m + p - 1). Peak in-flight chunk-micro-batches on rank r (Megatron's bound, the
// warm-up plus one): min(v*m, (v-1)*g + 2(p-1-r) + 1). v = 1 is exactly 1F1B (warm-up p-1-r).
//
// ZB-V (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 6; PyTorch's
// ScheduleZBVZeroBubble): 2 chunks per rank in a V, stage r and stage 2p-1-r on rank r, so rank 0
// holds the first and the last stage and the turn of the V (stages p-1, p) is a hand-off on rank
// p-1; backwards are split into B and W. Built by a deterministic list scheduler (see
// generators.cpp) that keeps at most 2p chunk-micro-batches in flight per rank (1F1B's
// activation memory, a chunk being half a stage) and at most 2p deferred W's. p = 2, m = 4,
// F = B = W = 1 (stages 0, 3 on rank 0; 1, 2 on rank 1):
//   rank 0 | 0F0 0F1 0F2 3F0 3B0 3F1 3B1 0B0 0F3 0B1 3W0 3W1 3F2 3B2 3F3 3B3 0W0 0B2 0W1 3W2 3W3 0B3 0W2 0W3
//   rank 1 | 1F0 2F0 1F1 2F1 2B0 1B0 2B1 1B1 2W0 1F2 2F2 1F3 2F3 2B2 1W0 1B2 2W1 2B3 1W1 1B3 2W2 1W2 2W3 1W3
// With F = B = W and m >= 2p its makespan is the lower bound 6m + p - 1 (the last rank cannot
// start before its first input has crossed p-1 ranks), so the bubble is (p-1)/(6m+p-1), the
// paper's "near zero"; in the tested sweep p <= 8, m <= 16 only p = 7, m = 15 takes one unit more.
//
// naive: each micro-batch goes all the way forward and back before the next starts (model
// parallelism without pipelining; with m = 1 it is the textbook naive model parallelism).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

Schedule naive_schedule(int stages, int microbatches);
Schedule gpipe_schedule(int stages, int microbatches);
Schedule one_f_one_b_schedule(int stages, int microbatches);
Schedule zb_h1_schedule(int stages, int microbatches);
Schedule interleaved_1f1b_schedule(int ranks, int chunks, int microbatches);
Schedule zb_v_schedule(int ranks, int microbatches);

// Forwards only, with their messages: evaluation and inference. Each rank runs its stages in
// ascending order, all micro-batches of a stage before the next stage, which cannot deadlock
// because every rank's list goes stage by stage along the pipeline.
Schedule forward_schedule(const std::vector<int>& stage_rank, int microbatches);
// One stage per rank.
Schedule forward_schedule(int stages, int microbatches);

// The names accepted by make_schedule, in a stable order: "naive", "gpipe", "1f1b", "zb-h1",
// "interleaved-1f1b", "zb-v".
const std::vector<std::string>& schedule_names();

// Stages per rank a schedule runs by default: 2 for "interleaved-1f1b" and "zb-v", 1 otherwise.
int default_chunks(const std::string& name);

// The largest schedule make_schedule plans: ranks x stages per rank x micro-batches.
constexpr long long kMaxStageMicrobatches = 1 << 18;
// The largest compute_schedule plans (for simulate_compute, compute_sim.h).
constexpr long long kMaxComputeStageMicrobatches = 1 << 24;

// Generator by name for `ranks` ranks with `chunks` stages each (0: default_chunks(name)), or a
// schedule file (schedule_file.h) when `name` is a readable file; with sends/receives inserted
// and validated. For a file the stages and their placement come from the file; `chunks`, when
// not 0, must then be its number of stages per rank. Throws ConfigError for an unknown name,
// ranks or m < 1, chunks < 0, chunks > 1 for a one-stage-per-rank schedule, zb-v with chunks other
// than 2, a schedule larger than kMaxStageMicrobatches; ScheduleError for a file that is malformed or would deadlock.
Schedule make_schedule(const std::string& name, int ranks, int microbatches, int chunks = 0);

// The same generator's compute actions only (F, B, W; no messages, no end of step), not
// validated: what simulate_compute replays at scales make_schedule refuses, up to
// kMaxComputeStageMicrobatches. The same ConfigErrors, with that limit.
Schedule compute_schedule(const std::string& name, int ranks, int microbatches, int chunks = 0);

// The most heap compute_schedule(name, ...) holds at once for `stage_microbatches` (stages x
// micro-batches), generously: up to three actions each (F, B, W), plus ZB-H1's 1F1B lists it
// starts from and the holes they leave in the heap. A program passes it to reserve_huge_heap
// (util/huge_heap.h) before planning; what it does not touch costs only address space.
std::size_t compute_schedule_bytes(long long stage_microbatches);

}  // namespace tpipe
