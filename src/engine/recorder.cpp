// Trace recording, clock alignment and gathering (see recorder.h).
#include "recorder.h"

#include <ATen/ATen.h>

#include <limits>

namespace tpipe {
namespace {

double steady_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr int kPings = 16;

}  // namespace

double Recorder::now_us() const { return steady_us() + offset_us_ - epoch_us_; }

// Cristian's method: rank r sends its time t1, rank 0 answers with its own time t0, rank r reads
// t2 on arrival; then rank 0's clock ~ t0 + (t2 - t1) / 2 at t2. The ping with the shortest
// round trip bounds the error best. Rank 0 serves the ranks one after another.
void Recorder::sync_clocks(Communicator& comm) {
  on_ = synced_ = true;
  const Where here{comm.rank(), -1, -1, "clock sync"};
  const int me = comm.rank();
  if (me == 0) {
    epoch_us_ = steady_us();
    for (int r = 1; r < comm.world_size(); ++r)
      for (int i = 0; i < kPings; ++i) {
        auto req = comm.post_recv(r, wire::Kind::Clock, i);
        comm.wait_recv(*req, here);
        comm.send({at::tensor({steady_us(), epoch_us_}, at::kDouble)}, r, wire::Kind::Clock, i, 0, 0, here);
      }
    comm.wait_sends();
    return;
  }
  double best_rtt = std::numeric_limits<double>::infinity();
  for (int i = 0; i < kPings; ++i) {
    auto reply = comm.post_recv(0, wire::Kind::Clock, i);
    const double t1 = steady_us();
    comm.send({at::tensor({t1}, at::kDouble)}, 0, wire::Kind::Clock, i, 0, 0, here);
    const Payload p = comm.wait_recv(*reply, here);
    const double t2 = steady_us();
    const double t0 = p[0][0].item<double>();
    if (t2 - t1 < best_rtt) {
      best_rtt = t2 - t1;
      offset_us_ = t0 + (t2 - t1) / 2 - t2;
      clock_error_us_ = (t2 - t1) / 2;
      epoch_us_ = p[0][1].item<double>();
    }
  }
  comm.wait_sends();
}

void Recorder::waited(int rank, const Action& recv, double since_us, std::int64_t bytes, int peer) {
  if (!on_) return;
  const double t = now_us();
  events_.push_back({rank, recv, since_us, t, bytes, -1, peer});
  start_ = t;  // the consumer's own work starts when the data is there
}

void Recorder::end(int rank, const Action& a, std::int64_t bytes, std::int64_t stash_bytes, int peer,
                   std::int64_t activation_bytes, std::int64_t memory_bytes) {
  if (!on_) return;
  events_.push_back({rank, a, start_, now_us(), bytes, stash_bytes, peer, activation_bytes, memory_bytes});
}

// Each rank sends its events as two tensors: times and sizes (double [n,6]: start, end, bytes,
// stash, activation and memory bytes) and the integers (int64 [n,5]: stage, op, mb, peer, rank).
trace::StepTrace Recorder::gather(Communicator& comm, std::int64_t step, const std::vector<trace::RankInfo>& ranks) {
  const Where here{comm.rank(), -1, -1, "trace gather"};
  auto pack = [](const std::vector<trace::Event>& ev) {
    at::Tensor d = at::zeros({static_cast<std::int64_t>(ev.size()), 6}, at::kDouble);
    at::Tensor n = at::zeros({static_cast<std::int64_t>(ev.size()), 5}, at::kLong);
    auto da = d.accessor<double, 2>();
    auto na = n.accessor<std::int64_t, 2>();
    for (std::size_t i = 0; i < ev.size(); ++i) {
      da[i][0] = ev[i].start_us;
      da[i][1] = ev[i].end_us;
      da[i][2] = static_cast<double>(ev[i].bytes);
      da[i][3] = static_cast<double>(ev[i].stash_bytes);
      da[i][4] = static_cast<double>(ev[i].activation_bytes);
      da[i][5] = static_cast<double>(ev[i].memory_bytes);
      na[i][0] = ev[i].action.stage;
      na[i][1] = static_cast<std::int64_t>(ev[i].action.op);
      na[i][2] = ev[i].action.mb;
      na[i][3] = ev[i].peer;
      na[i][4] = ev[i].rank;
    }
    return Payload{d, n};
  };
  trace::StepTrace t;
  if (comm.rank() != 0) {
    Payload mine = pack(events_);
    mine.push_back(at::full({1}, clock_error_us_, at::kDouble));
    comm.send(mine, 0, wire::Kind::Trace, 0, 0, -1, here);
    comm.wait_sends();
    events_.clear();
    return t;
  }
  t.step = step;
  t.ranks = ranks;
  t.events = std::move(events_);
  events_.clear();
  // Every receive posted first: each rank's lane fetches at once, and a rank is not kept
  // waiting in its send until the ranks before it have been heard (with more ranks than cores,
  // each message waits for its sender to get a core).
  std::vector<std::shared_ptr<Communicator::PendingRecv>> pending;
  for (int r = 1; r < comm.world_size(); ++r) pending.push_back(comm.post_recv(r, wire::Kind::Trace, 0));
  for (std::size_t k = 0; k < pending.size(); ++k) {
    const Payload p = comm.wait_recv(*pending[k], here);
    t.ranks.at(k + 1).clock_error_us = p.at(2)[0].item<double>();
    auto da = p[0].accessor<double, 2>();
    auto na = p[1].accessor<std::int64_t, 2>();
    for (std::int64_t i = 0; i < p[0].size(0); ++i)
      t.events.push_back({static_cast<int>(na[i][4]),
                          Action{static_cast<int>(na[i][0]), static_cast<Op>(na[i][1]), static_cast<int>(na[i][2])},
                          da[i][0], da[i][1], static_cast<std::int64_t>(da[i][2]), static_cast<std::int64_t>(da[i][3]),
                          static_cast<int>(na[i][3]), static_cast<std::int64_t>(da[i][4]),
                          static_cast<std::int64_t>(da[i][5])});
  }
  return t;
}

}  // namespace tpipe
