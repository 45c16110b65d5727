// The communication probe (see comm_probe.h).
#include "comm_probe.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "tpipe/comm/communicator.h"
#include "tpipe/comm/group.h"
#include "tpipe/error.h"
#include "tpipe/machine/facts.h"
#include "tpipe/util/stats.h"
#include "model_flags.h"
#include "model_piece.h"
#include "worker_ranks.h"

namespace tpipe::cli {
namespace {

constexpr int kWarmup = 3, kTimed = 11;
constexpr double kSmall = 4096, kLarge = 4 << 20;  // bytes: a gradient norm's scale, a layer's gradients

using Clock = std::chrono::steady_clock;

// Seconds of one run of `op(i)`, begun together on every rank.
template <class Op>
double seconds_once(Communicator& comm, Op op, int i) {
  std::vector<at::Tensor> zero{at::zeros({1})};
  comm.world().all_reduce_sum(zero, "lining up the communication probe");
  const auto t0 = Clock::now();
  op(i);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The median of kTimed runs of `op` (after kWarmup), each begun together on every rank.
template <class Op>
double median_seconds(Communicator& comm, Op op) {
  std::vector<double> t;
  for (int i = 0; i < kWarmup + kTimed; ++i) {
    const double s = seconds_once(comm, op, i);
    if (i >= kWarmup) t.push_back(s);
  }
  return median(t);
}

// A fixed piece of compute, GEMMs of a layer's size: what the other ranks do while ranks 0 and 1
// exchange messages.
void compute_piece(int gemms) {
  const at::Tensor a = at::rand({256, 256}), b = at::rand({256, 256});
  at::Tensor c = a;
  for (int k = 0; k < gemms; ++k) c = at::mm(c, b).div_(256);
}

// One message each way between ranks 0 and 1, while every other rank computes, as the other
// ranks of a pipeline do while a message is on its way (where ranks outnumber cores, the
// receiver then waits for a core before it can take the message): half the round trip, and
// what starting the send takes rank 0 (Gloo writes in the caller's thread, and a receiver it
// wakes may take the sender's core).
struct MessageTimes {
  double message_s = 0, send_s = 0;
};

MessageTimes message_times(Communicator& comm, double bytes, int link) {
  const int r = comm.rank(), peer = r ^ 1;
  const bool paired = r < 2 && peer < comm.world_size();
  const Payload p{at::zeros({static_cast<std::int64_t>(bytes / 4)})};
  const Where where{r};
  std::vector<double> sends;
  MessageTimes out;
  out.message_s = median_seconds(comm, [&](int i) {
           if (!paired) return compute_piece(80);
           if (r % 2 == 0) {
             const auto t0 = Clock::now();
             comm.send(p, peer, wire::Kind::Activation, 0, link, 0, where);
             if (i >= kWarmup) sends.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
             auto back = comm.post_recv(peer, wire::Kind::Gradient, 0, link);
             comm.wait_recv(*back, where);
           } else {
             auto in = comm.post_recv(peer, wire::Kind::Activation, 0, link);
             comm.send(comm.wait_recv(*in, where), peer, wire::Kind::Gradient, 0, link, 1, where);
           }
           comm.wait_sends();
         }) / 2;
  out.send_s = median(sends);
  return out;
}

// As the engine's reducer does it: the gradients (here 8 of them) flattened into a new tensor,
// all-reduced, copied back. A tensor reduced again and again in place took half the time here.
double all_reduce_seconds_of(Communicator& comm, Group& group, double bytes) {
  constexpr int kParts = 8;
  std::vector<at::Tensor> grads;
  for (int i = 0; i < kParts; ++i) grads.push_back(at::full({static_cast<std::int64_t>(bytes / 4 / kParts)}, 1e-3));
  return median_seconds(comm, [&](int) {
    std::vector<at::Tensor> flat{at::cat(grads)};
    group.all_reduce_sum(flat, "the communication probe's all-reduce");
    std::int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(flat[0].narrow(0, offset, g.numel()));
      offset += g.numel();
    }
  });
}

// How much longer every rank computing at once takes than one rank alone. Each round times each
// rank alone in turn, then every rank at once, until the last one is done (time-slicing lets some
// finish early; what counts is when the last one does, as in a pipeline's step); the result is
// the median over rounds of together / the mean of the turns alone. Rounds, not one phase after
// the other: the machine's speed drifts within a minute, and a drift between the phases made the
// factor on 4 ranks move from 1.09 to 1.22 between runs.
double together_over_alone(Communicator& comm, ModelPiece& piece) {
  const int n = comm.world_size();
  auto run = [&](bool mine) {
    return seconds_once(
        comm,
        [&](int) {
          if (mine) piece.run();
          std::vector<at::Tensor> zero{at::zeros({1})};
          comm.world().all_reduce_sum(zero, "the communication probe's compute");
        },
        0);
  };
  std::vector<double> ratios;
  for (int round = 0; round < kWarmup + kTimed; ++round) {
    double alone = 0;
    for (int i = 0; i < n; ++i) alone += run(comm.rank() == i) / n;
    const double together = run(true);
    if (round >= kWarmup) ratios.push_back(together / alone);
  }
  return median(ratios);
}

}  // namespace

int comm_probe_worker(const TrainConfig& c) {
  CommOptions co;
  co.timeout = std::chrono::seconds(60);
  auto comm = Communicator::from_env(co);
  const int n = comm->world_size(), r = comm->rank();
  nlohmann::json out;
  const MessageTimes small = message_times(*comm, kSmall, 0), large = message_times(*comm, kLarge, 1);
  out["message"] = {small.message_s, large.message_s};
  out["send"] = {small.send_s, large.send_s};
  for (int g = 2; g <= n; ++g) {
    if (n % g != 0) continue;
    std::vector<int> members;
    for (int i = r / g * g; i < (r / g + 1) * g; ++i) members.push_back(i);
    auto group = comm->new_group("probe/" + std::to_string(g) + "/" + std::to_string(r / g), members);
    out["all_reduce"][std::to_string(g)] = {all_reduce_seconds_of(*comm, *group, kSmall),
                                            all_reduce_seconds_of(*comm, *group, kLarge)};
  }
  ModelPiece piece(c);
  out["together_over_alone"] = together_over_alone(*comm, piece);
  if (r == 0) report_summary(out);
  return 0;
}

RankProbe probe_ranks(int ranks, int cores, const TrainConfig& model) {
  RankProbe p;
  CommCosts& c = p.comm;
  if (ranks < 2) return p;
  LaunchOptions lo;
  lo.nproc = ranks;
  const RankTuning tuning = tune_local_ranks(ranks);
  lo.env = tuning.set;
  lo.cpus = tuning.cpus;
  lo.command = {"/proc/self/exe", "plan", "--probe-worker"};
  for (auto& a : model_args(model)) lo.command.push_back(a);
  nlohmann::json s;
  if (launch_worker_ranks("tpipe plan", lo, s) != 0 || s.is_null())
    throw Error("the communication probe on " + std::to_string(ranks) + " ranks failed");
  auto line = [](const nlohmann::json& pair) {
    return fit_linear_cost(kSmall, pair[0].get<double>(), kLarge, pair[1].get<double>());
  };
  c.point_to_point = line(s["message"]);
  c.sending = line(s["send"]);
  for (const auto& [g, pair] : s["all_reduce"].items()) c.all_reduce[std::stoi(g)] = line(pair);
  c.ranks = ranks;
  // Sharing the cores evenly explains ranks / cores of it; the rest is what time-slicing and
  // shared caches cost (never counted as a speed-up).
  p.slowdown = std::max(1.0, s["together_over_alone"].get<double>() / std::max(1.0, static_cast<double>(ranks) / cores));
  return p;
}

}  // namespace tpipe::cli
