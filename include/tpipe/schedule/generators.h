// Schedule generators: pure functions (stages, micro-batches) -> Schedule, one stage per rank.
// They produce compute actions only; insert_comms() adds the sends and receives.
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
// naive: each micro-batch goes all the way forward and back before the next starts (model
// parallelism without pipelining; with m = 1 it is the textbook naive model parallelism).
#pragma once

#include <string>
#include <vector>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

Schedule naive_schedule(int stages, int microbatches);
Schedule gpipe_schedule(int stages, int microbatches);
Schedule one_f_one_b_schedule(int stages, int microbatches);
Schedule zb_h1_schedule(int stages, int microbatches);

// Forwards only, in micro-batch order, with their messages: evaluation and inference.
Schedule forward_schedule(int stages, int microbatches);

// The names accepted by make_schedule, in a stable order: "naive", "gpipe", "1f1b", "zb-h1".
const std::vector<std::string>& schedule_names();

// Generator by name, or a schedule file (schedule_file.h) when `name` is a readable file; with
// sends/receives inserted and validated. Throws ConfigError for an unknown name or p, m < 1,
// ScheduleError for a file that is malformed or would deadlock.
Schedule make_schedule(const std::string& name, int stages, int microbatches);

}  // namespace tpipe
