// Private to src/comm: waiting on a c10d Work with errors that say who and what.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "tpipe/error.h"

namespace tpipe::detail {

// Why a peer was lost: it sent nothing for `timeout` (silent), or it closed the connection (it
// died or failed). peer -1: unknown.
std::string lost_peer_reason(bool silent, int peer, std::chrono::milliseconds timeout);

// "receiving ... failed: rank 2 closed the connection (it died or failed) [gloo: ...]".
std::string failure_text(const std::string& what, const std::string& gloo_message, int peer,
                         std::chrono::milliseconds timeout);

// Waits up to `timeout`; on failure throws CommError: where + what + why (peer -1: unknown).
void wait_work(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
               int peer);

// A collective's roll call: a member that has waited a while for it marks itself arrived in the
// store (key + its rank), so a member that times out can name the members that never came (a
// hung member is not waiting, so it never marks). Nothing is written for collectives that
// complete quickly.
struct Roll {
  c10::intrusive_ptr<c10d::Store> store;  // null: no roll call (a group of one)
  std::string key;                        // this collective's, "<count>/"
  std::vector<int> members;               // global ranks
  int me = -1;
  // The job's own store, where each rank's host address is kept under kHostKey + rank (set at the
  // rendezvous), and the world size: a failure whose peer is unknown (a collective of more than
  // two) is traced to a rank on the host Gloo names. Null: not known (ranks as threads).
  c10::intrusive_ptr<c10d::Store> hosts;
  int world = 0;
};

constexpr const char* kHostKey = "tpipe/host/";

// wait_work for a collective: after `mark_after` of waiting it marks this member arrived; on a
// timeout it names the members that did not arrive.
void wait_collective(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
                     const Roll& roll, std::chrono::milliseconds mark_after = std::chrono::milliseconds(1000));

}  // namespace tpipe::detail
