// The Communicator: one rank's view of the job, over c10d's Gloo process group. RAII, no globals:
// several Communicators can live in one process (ranks as threads sharing a HashStore in tests).
//
// Point-to-point messages carry a Payload: a header (wire.h) then each tensor under its own tag.
// Neither side blocks the other mid-schedule: a receive is posted early, and a thread of this
// Communicator (one per peer) posts its data receives as soon as the header arrives, so the data
// moves while the consumer computes; a send returns at once, and its tensors are released as soon
// as the peer has taken them. Between two ranks of one host a message is instead copied into
// shared memory when it is sent (by a thread of this Communicator when the ring is full) and out
// of it when it is received, with no socket, no Gloo thread and no header round trip. Every wait is bounded by the timeout (counted from when the
// Communicator starts waiting on that peer's message; a send's completion by twice that, so a
// silent peer is reported by the receive that needed it), and a failure names this rank, the
// peer and the action.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tpipe/comm/group.h"
#include "tpipe/comm/wire.h"
#include "tpipe/error.h"
#include "tpipe/microbatch.h"

namespace c10d {
class Store;
}

namespace tpipe {

struct CommOptions {
  std::chrono::milliseconds timeout{300000};  // any wait on a peer longer than this is an error
  // Point-to-point messages between two ranks of one host go through shared memory (a ring of
  // this many bytes each way, reserved in /dev/shm when first used) instead of Gloo's sockets;
  // false, or TPIPE_TRANSPORT=gloo for from_env, sends everything through Gloo. Collectives
  // always use Gloo.
  bool shared_memory = true;
  std::size_t shm_ring_bytes = std::size_t{16} << 20;
  // A rank waiting for a message through shared memory polls for up to this long before it
  // sleeps. On a VM a core that sleeps is lent to other guests and comes back with cold caches:
  // on W1 (2 ranks, 2 cores) the stages computed ~5 % faster polling. Worth it only when the rank
  // has a core of its own: `tpipe run` binds each rank to cores of its own and then sets
  // TPIPE_WAIT=spin (for from_env: spin = 1 s, sleep = 0) unless the user set it. A rank that
  // finds another process's thread wanting its core while it polls sleeps for the next second.
  // Only receives poll; a send waiting for room in a full ring always sleeps.
  std::chrono::milliseconds spin_wait{0};
};

class Communicator {
 public:
  // Rendezvous through a TCPStore at the master, who this rank is read from its launcher's
  // variables: torchrun's (tpipe run's), Slurm's or Open MPI's (rank_env.h).
  static std::unique_ptr<Communicator> from_env(const CommOptions& options = {});

  // Ranks sharing an existing store (e.g. threads of one process sharing a c10d::HashStore).
  Communicator(int rank, int world_size, const c10::intrusive_ptr<c10d::Store>& store,
               const CommOptions& options = {}, const std::string& host = "127.0.0.1");
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int world_size() const;
  std::chrono::milliseconds timeout() const;

  // A receive posted ahead of its consumer. One that is never waited for (its step failed) may
  // be dropped: the Communicator keeps its buffers as long as Gloo may write into them.
  // `link` tells apart two messages of one kind and micro-batch from the same peer (wire.h).
  struct PendingRecv;
  std::shared_ptr<PendingRecv> post_recv(int src, wire::Kind kind, int mb, int link = 0);
  // Waits for the message and returns its payload; `where` names the consuming action in errors.
  Payload wait_recv(PendingRecv& r, const Where& where);

  // Starts sending a payload (tensors are made contiguous and held until the peer has them).
  // Throws if an earlier send failed.
  void send(const Payload& p, int dst, wire::Kind kind, int mb, int link, int sender_stage, const Where& where);
  // Waits until every send started so far has been handed over (received by the peer, or
  // copied into the shared memory it reads from); throws if one failed.
  void wait_sends();
  // The data tensors of the sends not yet received (what sending holds in memory now).
  std::vector<at::Tensor> tensors_in_flight() const;

  // Whether messages to and from `peer` go through shared memory (else through Gloo).
  bool shares_memory_with(int peer) const;

  // All ranks.
  Group& world();
  // A group of some ranks; every member calls this with the same name and ranks, and groups are
  // created in the same order on every rank (Gloo connects the members when it is created).
  // Creating a group of the same name again (a second engine) makes a new, separate group.
  std::unique_ptr<Group> new_group(const std::string& name, const std::vector<int>& ranks);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpipe
