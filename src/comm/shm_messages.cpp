// Point-to-point messages between two ranks of one host, through shared memory (see
// communicator.h and shm_pair.h). A message is one frame in the ring toward the receiver: its
// link, the wire header, then each defined tensor's bytes. The receiver reads frames in the order
// they were sent; one read while it looks for another is kept until its own receive asks for it.
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "communicator_impl.h"
#include "work.h"

namespace tpipe {
namespace {

constexpr int kMaxShmPeers = 64;  // ranks this far apart are on different hosts in any real job

// What went wrong with a message, in the words of Gloo's failures (work.h).
std::string shm_failure(const std::string& what, const std::exception& e, int peer, std::chrono::milliseconds timeout) {
  const auto* lost = dynamic_cast<const detail::ShmLost*>(&e);
  if (!lost) return what + " failed: " + e.what();
  switch (lost->why) {
    case detail::ShmLost::Why::Stopping:
      return what + " was cut short: this rank's Communicator is closing";
    case detail::ShmLost::Why::TimedOut:
      return what + " failed: " + detail::lost_peer_reason(true, peer, timeout) + " [shared memory]";
    default:
      return what + " failed: " + detail::lost_peer_reason(false, peer, timeout) + " [shared memory: " + e.what() +
             "]";
  }
}

bool room_in_dev_shm(std::size_t bytes) {
  struct statvfs s {};
  return statvfs("/dev/shm", &s) == 0 && static_cast<double>(s.f_bavail) * s.f_frsize >= static_cast<double>(bytes);
}

std::string text(const std::vector<std::uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<std::uint8_t> bytes(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

}  // namespace

// Every rank says who it is (shm_identity, or nothing when it wants Gloo only); each pair of ranks
// that match pairs up: the lower rank creates the segment and names it in the store, the higher
// opens it and says whether that worked. Both then know, and the name is removed (the mappings
// stay, and nothing is left in /dev/shm if either dies later).
void Communicator::Impl::connect_shm(const CommOptions& options) {
  const std::string gen = std::to_string(store->add("tpipe/shm/generation/" + std::to_string(rank), 1));
  auto key = [&](const std::string& what, int a, int b) {
    return "tpipe/shm/" + gen + "/" + what + "/" + std::to_string(a) + (b >= 0 ? "-" + std::to_string(b) : "");
  };
  const std::string me = options.shared_memory ? detail::shm_identity() : "";
  store->set(key("id", rank, -1), bytes(me));
  std::vector<int> same;
  for (int q = std::max(0, rank - kMaxShmPeers + 1); q < std::min(world, rank + kMaxShmPeers); ++q)
    if (q != rank && !me.empty() && text(store->get(key("id", q, -1))) == me) same.push_back(q);
  auto add = [&](int q, std::unique_ptr<detail::ShmPair> pair) {
    auto peer = std::make_unique<detail::ShmPeer>();
    peer->pair = std::move(pair);
    shm_peers[q] = std::move(peer);
  };
  std::map<int, std::unique_ptr<detail::ShmPair>> created;
  for (int q : same) {
    if (q < rank) continue;
    std::string name;
    if (room_in_dev_shm(2 * options.shm_ring_bytes)) {
      name = "/tpipe-" + std::to_string(getpid()) + "-" + std::to_string(rank) + "-" + std::to_string(q) + "-g" + gen +
             "-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
      try {
        created[q] = detail::ShmPair::create(name, options.shm_ring_bytes);
      } catch (const std::exception&) {
        name.clear();  // this pair talks through Gloo
      }
    }
    store->set(key("segment", rank, q), bytes(name));
  }
  for (int q : same) {
    if (q > rank) continue;
    const std::string name = text(store->get(key("segment", q, rank)));
    std::unique_ptr<detail::ShmPair> pair;
    if (!name.empty()) try {
        pair = detail::ShmPair::open(name);
      } catch (const std::exception&) {
      }
    store->set(key("opened", q, rank), bytes(pair ? "1" : "0"));
    if (pair) add(q, std::move(pair));
  }
  for (auto& [q, pair] : created) {
    const bool opened = text(store->get(key("opened", rank, q))) == "1";
    pair->unlink();  // both sides hold it now (or never will)
    if (opened) add(q, std::move(pair));
  }
}

void Communicator::Impl::shm_send(detail::ShmPeer& peer, const at::Tensor& header, const Payload& p, int dst,
                                  int link, const Where& where) {
  auto s = std::make_shared<detail::PendingSend>();
  s->dst = dst;
  s->where = where;
  at::Tensor frame = at::empty({wire::kHeaderWords + 1}, at::kLong);
  frame[0] = link;
  frame.narrow(0, 1, wire::kHeaderWords).copy_(header);
  s->tensors.push_back({frame});
  std::size_t total = frame.nbytes();
  for (const auto& t : p) {
    if (!t.defined()) continue;
    s->tensors.push_back({t.detach().to(at::kCPU).contiguous()});
    total += s->tensors.back()[0].nbytes();
  }
  const std::string what = "sending to rank " + std::to_string(dst);
  auto write_all = [&peer, s, this] {
    const detail::WaitLimit limit{std::chrono::steady_clock::now() + 2 * timeout, [this] { return stopper.stopping(); }};
    for (const auto& t : s->tensors) peer.pair->write(t[0].data_ptr(), t[0].nbytes(), limit);
  };
  std::unique_lock<std::mutex> lock(sends_mu);
  if (peer.queued == 0 && peer.pair->room() >= total) {  // it fits: copied in now, nothing to wait for
    try {
      write_all();
    } catch (const std::exception& e) {
      // As a failed send through Gloo: reported by the next send or wait_sends, so that a peer
      // that died is named first by the receive that needed it.
      if (send_error.empty()) send_error = where.prefix() + shm_failure(what, e, dst, 2 * timeout);
    }
    return;
  }
  // The ring is full: a lane copies the message in as the peer makes room, holding its tensors.
  ++peer.queued;
  in_flight.insert(s);
  lock.unlock();
  lane(send_lanes, dst).post([this, &peer, s, write_all, what] {
    std::string error;
    try {
      write_all();
    } catch (const detail::ShmLost& e) {
      if (e.why != detail::ShmLost::Why::Stopping) error = s->where.prefix() + shm_failure(what, e, s->dst, 2 * timeout);
    } catch (const std::exception& e) {
      error = s->where.prefix() + shm_failure(what, e, s->dst, 2 * timeout);
    }
    std::lock_guard<std::mutex> done(sends_mu);
    if (send_error.empty()) send_error = std::move(error);
    --peer.queued;
    in_flight.erase(s);
  });
}

Payload Communicator::Impl::shm_receive(detail::ShmPeer& peer, PendingRecv& r, const Where& where) {
  const auto want = std::make_tuple(r.kind, r.mb, r.link);
  std::lock_guard<std::mutex> lock(peer.read_mu);
  if (auto it = peer.early.find(want); it != peer.early.end()) {
    Payload p = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) peer.early.erase(it);
    return p;
  }
  if (!peer.broken.empty()) throw CommError(where.prefix() + peer.broken);
  const std::string what = "receiving the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) +
                           " from rank " + std::to_string(r.src);
  const auto now = std::chrono::steady_clock::now();
  const detail::WaitLimit limit{now + timeout, [this] { return stopper.stopping(); }, now + spin_wait};
  try {
    for (;;) {
      std::int64_t words[wire::kHeaderWords + 1];
      peer.pair->read(words, sizeof words, limit);
      const wire::Header h = wire::decode(at::from_blob(words + 1, {wire::kHeaderWords}, at::kLong));
      Payload p = wire::allocate(h);
      for (auto& t : p)
        if (t.defined()) peer.pair->read(t.data_ptr(), t.nbytes(), limit);
      const auto got = std::make_tuple(h.kind, h.mb, static_cast<int>(words[0]));
      if (got == want) return p;
      peer.early[got].push_back(std::move(p));
    }
  } catch (const std::exception& e) {
    // The stream may have stopped mid-message: nothing after this can be read.
    peer.broken = shm_failure(what, e, r.src, timeout);
    throw CommError(where.prefix() + peer.broken);
  }
}

bool Communicator::shares_memory_with(int peer) const { return impl_->shm_peers.count(peer) > 0; }

}  // namespace tpipe
