// The Communicator: one rank's view of the job, over c10d's Gloo process group. RAII, no globals:
// several Communicators can live in one process (ranks as threads sharing a HashStore in tests).
//
// Point-to-point messages carry a Payload: a header (wire.h) then each tensor under its own tag.
// Receives are posted early and waited on by the consumer; sends are queued and their completion
// is awaited at the end of the step, so neither side blocks the other mid-schedule. Every wait is
// bounded by the timeout, and a failure names this rank, the peer and the action.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
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
};

class Communicator {
 public:
  // torchrun-style rendezvous through a TCPStore: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
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

  // A receive posted ahead of its consumer.
  struct PendingRecv;
  std::shared_ptr<PendingRecv> post_recv(int src, wire::Kind kind, int mb);
  // Waits for the message and returns its payload; `where` names the consuming action in errors.
  Payload wait_recv(PendingRecv& r, const Where& where);
  // A receive that will never be waited for (its step failed): Gloo may still write into its
  // buffer, so the Communicator keeps it until its process group is gone.
  void abandon(std::shared_ptr<PendingRecv> r);

  // Queues a payload (tensors are made contiguous and kept alive until wait_sends).
  void send(const Payload& p, int dst, wire::Kind kind, int mb, int sender_stage, const Where& where);
  // Waits until every queued send has been received.
  void wait_sends();

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
