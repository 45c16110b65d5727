// Private to src/comm: the state of one rank's Communicator, shared by its set-up and groups
// (communicator.cpp) and its point-to-point messages (point_to_point.cpp).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "group_impl.h"
#include "lane.h"
#include "shm_pair.h"
#include "tpipe/comm/communicator.h"

namespace tpipe {

// A receive: its header is posted at once, and so are its data receives when the channel's last
// message predicts the shapes; its lane waits for the header, posts the data receives if they
// were not predicted (or the prediction was wrong), waits for them, then hands the payload (or
// what went wrong) to the consumer.
struct Communicator::PendingRecv {
  int src;
  wire::Kind kind;
  int mb;
  int link;
  std::vector<at::Tensor> header;
  c10::intrusive_ptr<c10d::Work> header_work;
  at::Tensor predicted_header;  // the channel's last header, undefined when nothing was predicted
  Payload predicted;
  std::vector<c10::intrusive_ptr<c10d::Work>> predicted_works;
  bool shm = false;  // from a peer on this host: read from shared memory by wait_recv

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Payload payload;
  std::string error;  // without the consumer's "[rank | stage | mb | action]" prefix
};

namespace detail {

// Activations and gradients repeat their shapes from step to step; the engine's own messages
// (clock, trace records) do not, and are not predicted.
inline bool predictable(wire::Kind k) { return k == wire::Kind::Activation || k == wire::Kind::Gradient; }

// One direction of messages of one kind, micro-batch and link with one peer.
using Channel = std::tuple<int, wire::Kind, int, int>;

// A send in flight: its tensors are held until the peer has taken them.
struct PendingSend {
  std::vector<std::vector<at::Tensor>> tensors;  // header, then each data tensor
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  int dst;
  Where where;
};

// A peer on this host, reached through shared memory (shm_messages.cpp).
struct ShmPeer {
  std::unique_ptr<ShmPair> pair;
  std::mutex read_mu;  // one reader at a time
  // Messages read while looking for another one, by (kind, mb, link), oldest first.
  std::map<std::tuple<wire::Kind, int, int>, std::deque<Payload>> early;
  std::string broken;  // a failed read leaves the stream mid-message: every later read fails so
  int queued = 0;      // sends waiting on the send lane for room (guarded by Impl::sends_mu)
};

}  // namespace detail

struct Communicator::Impl {
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  std::chrono::milliseconds spin_wait{0};  // CommOptions::spin_wait
  c10::intrusive_ptr<c10d::Store> store;
  bool hosts_known = false;  // every rank's host address is in the store (detail::kHostKey)
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::unique_ptr<Group> world_group;
  std::map<std::string, int> groups_named;  // how many groups of each name this rank created

  // Point-to-point progress: one lane per peer for receives, one for sends (see lane.h).
  detail::Stopper stopper;
  std::map<int, std::unique_ptr<detail::Lane>> recv_lanes, send_lanes;
  std::mutex sends_mu;  // guards what the send lanes share with the engine's thread
  std::set<std::shared_ptr<detail::PendingSend>> in_flight;
  std::string send_error;  // the first failed send, with its prefix

  // The last header of each channel, sent (engine's thread only) and received (written by the
  // lanes): both sides know what the receiver predicts for the next message.
  std::map<detail::Channel, at::Tensor> sent_last;
  std::mutex recv_last_mu;
  std::map<detail::Channel, at::Tensor> recv_last;

  // Peers on this host whose messages go through shared memory, by rank.
  std::map<int, std::unique_ptr<detail::ShmPeer>> shm_peers;
  detail::ShmPeer* shm_peer(int rank) {
    auto it = shm_peers.find(rank);
    return it == shm_peers.end() ? nullptr : it->second.get();
  }
  // At construction: pairs up with every peer on this host that also wants shared memory.
  void connect_shm(const CommOptions& options);
  void shm_send(detail::ShmPeer& peer, const at::Tensor& header, const Payload& p, int dst, int link,
                const Where& where);
  Payload shm_receive(detail::ShmPeer& peer, PendingRecv& r, const Where& where);

  void wait(c10d::Work& w, const Where& where, const std::string& what, int peer) {
    detail::wait_work(w, timeout, where, what, peer);
  }

  detail::Lane& lane(std::map<int, std::unique_ptr<detail::Lane>>& lanes, int peer) {
    auto& l = lanes[peer];
    if (!l) l = std::make_unique<detail::Lane>();
    return *l;
  }

  // Waits on a lane; false when the Communicator is going away (the wait was aborted). A failure
  // throws with Gloo's message, which the caller turns into text. Receives wait up to the timeout;
  // sends twice as long, so that a silent peer is reported by the receive that waited for it (a
  // Gloo timeout closes every connection of the process group, failing all other waits).
  bool lane_wait(c10d::Work& w, std::chrono::milliseconds limit) {
    if (!stopper.enter(&w)) return false;
    bool ok = false;
    try {
      ok = w.wait(limit);
    } catch (...) {
      stopper.leave(&w);
      throw;
    }
    stopper.leave(&w);
    return ok && !stopper.stopping();
  }

  // Posts a receive for each defined tensor of `into`, on r's predicted or other data tags.
  std::vector<c10::intrusive_ptr<c10d::Work>> post_data_recvs(Payload& into, const PendingRecv& r, bool predicted);
  void fetch(PendingRecv& r);
  void complete(const std::shared_ptr<detail::PendingSend>& s);

  // `roll`: the store prefix under which members mark the collectives they wait long for.
  std::unique_ptr<Group> make_group(const std::string& name, const std::vector<int>& ranks,
                                    c10::intrusive_ptr<c10d::ProcessGroup> group_pg, const std::string& roll) {
    auto g = std::make_unique<Group::Impl>();
    g->name = name;
    g->ranks = ranks;
    g->index = static_cast<int>(std::find(ranks.begin(), ranks.end(), rank) - ranks.begin());
    g->global_rank = rank;
    g->timeout = timeout;
    if (ranks.size() > 1) {
      g->pg = std::move(group_pg);
      g->roll = c10::make_intrusive<c10d::PrefixStore>(roll, store);
      if (hosts_known) g->hosts = store, g->world = world;
    }
    return std::make_unique<Group>(std::move(g));
  }
};

}  // namespace tpipe
