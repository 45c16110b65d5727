// Schedule generators (see the pictures in generators.h).
#include "tpipe/schedule/generators.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <utility>

#include "generator_parts.h"
#include "tpipe/error.h"
#include "tpipe/schedule/comm_pass.h"
#include "tpipe/schedule/schedule_file.h"
#include "tpipe/schedule/validator.h"

namespace tpipe {

using detail::check_sizes;
using detail::empty_schedule;

Schedule naive_schedule(int stages, int microbatches) {
  check_sizes("naive", stages, microbatches);
  Schedule s = empty_schedule("naive", stages, microbatches);
  for (int st = 0; st < stages; ++st)
    for (int mb = 0; mb < microbatches; ++mb) {
      s.ranks[st].push_back({st, Op::Forward, mb});
      s.ranks[st].push_back({st, Op::Backward, mb});
    }
  return s;
}

Schedule gpipe_schedule(int stages, int microbatches) {
  check_sizes("gpipe", stages, microbatches);
  Schedule s = empty_schedule("gpipe", stages, microbatches);
  for (int st = 0; st < stages; ++st) {
    s.ranks[st].reserve(2 * static_cast<std::size_t>(microbatches));
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[st].push_back({st, Op::Forward, mb});
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[st].push_back({st, Op::Backward, mb});
  }
  return s;
}

Schedule one_f_one_b_schedule(int stages, int microbatches) {
  check_sizes("1f1b", stages, microbatches);
  Schedule s = empty_schedule("1f1b", stages, microbatches);
  for (int st = 0; st < stages; ++st) {
    auto& list = s.ranks[st];
    list.reserve(2 * static_cast<std::size_t>(microbatches));
    const int warmup = std::min(stages - 1 - st, microbatches);
    int next_f = 0, next_b = 0;
    while (next_f < warmup) list.push_back({st, Op::Forward, next_f++});
    while (next_f < microbatches) {
      list.push_back({st, Op::Forward, next_f++});
      list.push_back({st, Op::Backward, next_b++});
    }
    while (next_b < microbatches) list.push_back({st, Op::Backward, next_b++});
  }
  return s;
}

// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 3.1): 1F1B's order
// of F and B, with each backward split into B (input gradient, which the previous stage waits
// for) and W (weight gradient, which nobody waits for). Stage s runs the W of micro-batch k
// after the B of micro-batch k + s, so the W's it holds back fill the tail where it would wait
// for the last B's; the rest of its W's drain at the end. F and B keep 1F1B's in-flight limit.
Schedule zb_h1_schedule(int stages, int microbatches) {
  check_sizes("zb-h1", stages, microbatches);
  Schedule s = one_f_one_b_schedule(stages, microbatches);
  s.name = "zb-h1";
  for (int st = 0; st < stages; ++st) {
    std::vector<Action> list;
    list.reserve(3 * static_cast<std::size_t>(microbatches));
    for (const Action& a : s.ranks[st]) {
      list.push_back(a);
      if (a.op == Op::Backward && a.mb >= st) list.push_back({st, Op::Weight, a.mb - st});
    }
    for (int mb = std::max(0, microbatches - st); mb < microbatches; ++mb) list.push_back({st, Op::Weight, mb});
    s.ranks[st] = std::move(list);
  }
  return s;
}

// Interleaved 1F1B. The order of (chunk, micro-batch) pairs is the same on every rank; see
// generators.h for why the left-over micro-batches join the first round.
Schedule interleaved_1f1b_schedule(int ranks, int chunks, int microbatches) {
  check_sizes("interleaved-1f1b", ranks, microbatches);
  if (chunks < 1)
    throw ConfigError("interleaved-1f1b schedule needs at least 1 stage per rank, got " + std::to_string(chunks));
  const int p = ranks, v = chunks, m = microbatches;
  Schedule s = empty_schedule("interleaved-1f1b", p * v, m);
  s.ranks.assign(p, {});
  for (int st = 0; st < p * v; ++st) s.stage_rank[st] = st % p;

  // Rounds of micro-batches [begin, end): p + m mod p first, then p each (one round if m < p).
  std::vector<std::pair<int, int>> rounds;
  const int first = m < p ? m : p + m % p;
  rounds.push_back({0, first});
  for (int b = first; b < m; b += p) rounds.push_back({b, b + p});
  std::vector<std::pair<int, int>> fwd, bwd;  // (chunk, mb) in execution order
  for (const auto& [begin, end] : rounds)
    for (int c = 0; c < v; ++c)
      for (int mb = begin; mb < end; ++mb) {
        fwd.push_back({c, mb});
        bwd.push_back({v - 1 - c, mb});
      }

  const int total = v * m;
  for (int r = 0; r < p; ++r) {
    // Rank r's first backward (chunk v-1 of micro-batch 0) needs its own forwards up to that
    // chunk, (v-1)*first of them, and returns after the forward and backward have crossed the
    // 2(p-1-r) hops to the last rank and back, which the extra forwards cover. Without chunks
    // to wrap around (v = 1) the warm-up is 1F1B's p-1-r.
    const int warmup = std::min(total, v == 1 ? p - 1 - r : (v - 1) * first + 2 * (p - 1 - r));
    auto& list = s.ranks[r];
    list.reserve(2 * static_cast<std::size_t>(total));
    int f = 0, b = 0;
    auto forward = [&] { list.push_back({fwd[f].first * p + r, Op::Forward, fwd[f].second}), ++f; };
    auto backward = [&] { list.push_back({bwd[b].first * p + r, Op::Backward, bwd[b].second}), ++b; };
    while (f < warmup) forward();
    while (f < total) forward(), backward();
    while (b < total) backward();
  }
  return s;
}

Schedule forward_schedule(const std::vector<int>& stage_rank, int microbatches) {
  check_sizes("forward", static_cast<int>(stage_rank.size()), microbatches);
  const int ranks = *std::max_element(stage_rank.begin(), stage_rank.end()) + 1;
  Schedule s = empty_schedule("forward", static_cast<int>(stage_rank.size()), microbatches);
  s.stage_rank = stage_rank;
  s.ranks.assign(ranks, {});
  s.forward_only = true;
  for (int st = 0; st < s.num_stages(); ++st) {
    if (stage_rank[st] < 0)
      throw ConfigError("forward schedule: stage " + std::to_string(st) + " is placed on rank " +
                        std::to_string(stage_rank[st]));
    for (int mb = 0; mb < microbatches; ++mb) s.ranks[stage_rank[st]].push_back({st, Op::Forward, mb});
  }
  for (int r = 0; r < ranks; ++r)
    if (s.ranks[r].empty())
      throw ConfigError("forward schedule: rank " + std::to_string(r) + " holds no stage");
  Schedule full = insert_comms(s);
  validate(full);
  return full;
}

Schedule forward_schedule(int stages, int microbatches) {
  check_sizes("forward", stages, microbatches);
  std::vector<int> one_each(stages);
  std::iota(one_each.begin(), one_each.end(), 0);
  return forward_schedule(one_each, microbatches);
}

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names{"naive", "gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"};
  return names;
}

int default_chunks(const std::string& name) { return name == "interleaved-1f1b" || name == "zb-v" ? 2 : 1; }

namespace {

Schedule from_file(const std::string& path, int ranks, int microbatches, int chunks) {
  Schedule s = schedule_from_file(path, ranks, microbatches);
  if (chunks != 0 && s.num_stages() != chunks * s.num_ranks())
    throw ConfigError(path + " places " + std::to_string(s.num_stages()) + " stages on " +
                      std::to_string(s.num_ranks()) + " ranks, but " + std::to_string(chunks) +
                      " stages per rank were asked for (0 takes the file's placement)");
  return s;
}

// `what` is planned up to `most` stage micro-batches (`why` says what a larger plan would cost).
void check_size(int ranks, int v, int microbatches, long long most, const char* what, const char* why) {
  const double size = static_cast<double>(ranks) * v * microbatches;  // no overflow
  if (ranks >= 1 && microbatches >= 1 && size > static_cast<double>(most))
    throw ConfigError(std::to_string(ranks) + " ranks x " + std::to_string(v) + (v == 1 ? " stage" : " stages") +
                      " x " + std::to_string(microbatches) + " micro-batches is more than " + what + " (at most " +
                      std::to_string(most) + " stage micro-batches" + why + ")");
}

Schedule generate(const std::string& name, int ranks, int microbatches, int chunks, long long most,
                  const char* what, const char* why) {
  if (chunks < 0)
    throw ConfigError("stages per rank must be >= 1 (or 0 for the schedule's default), got " + std::to_string(chunks));
  const int v = chunks == 0 ? default_chunks(name) : chunks;
  check_size(ranks, v, microbatches, most, what, why);
  const bool one_per_rank = name == "naive" || name == "gpipe" || name == "1f1b" || name == "zb-h1";
  if (one_per_rank && v != 1)
    throw ConfigError("the " + name + " schedule runs one stage per rank; for " + std::to_string(v) +
                      " stages per rank use interleaved-1f1b or zb-v");
  if (name == "zb-v" && v != 2)
    throw ConfigError("the zb-v schedule runs exactly 2 stages per rank (a V), got " + std::to_string(v));
  if (name == "naive") return naive_schedule(ranks, microbatches);
  if (name == "gpipe") return gpipe_schedule(ranks, microbatches);
  if (name == "1f1b") return one_f_one_b_schedule(ranks, microbatches);
  if (name == "zb-h1") return zb_h1_schedule(ranks, microbatches);
  if (name == "interleaved-1f1b") return interleaved_1f1b_schedule(ranks, v, microbatches);
  if (name == "zb-v") return zb_v_schedule(ranks, microbatches);
  if (std::error_code ec; std::filesystem::is_directory(name, ec))
    throw ConfigError("the schedule file " + name + " is a directory");
  if (std::ifstream(name).good()) return from_file(name, ranks, microbatches, chunks);
  std::string known;
  for (const auto& n : schedule_names()) known += (known.empty() ? "" : ", ") + n;
  throw ConfigError("unknown schedule '" + name + "'; known schedules: " + known + ", or a file of actions");
}

}  // namespace

Schedule compute_schedule(const std::string& name, int ranks, int microbatches, int chunks) {
  return generate(name, ranks, microbatches, chunks, kMaxComputeStageMicrobatches, "the simulator plans", "");
}

std::size_t compute_schedule_bytes(long long stage_microbatches) {
  return static_cast<std::size_t>(stage_microbatches) * 8 * sizeof(Action) + (64u << 20);
}

Schedule make_schedule(const std::string& name, int ranks, int microbatches, int chunks) {
  const Schedule compute = generate(name, ranks, microbatches, chunks, kMaxStageMicrobatches,
                                    "a schedule is planned for", ", a few seconds of planning");
  Schedule full = insert_comms(compute);
  validate(full);
  return full;
}

}  // namespace tpipe
