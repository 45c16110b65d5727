// Waiting on c10d work with errors a user can act on (see work.h).
#include "work.h"

#include <cstdio>

#include "tpipe/comm/peer_loss.h"

namespace tpipe::detail {
namespace {

std::string seconds(std::chrono::milliseconds t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(t.count()) / 1000.0);
  return buf;
}

// Gloo says "Timed out" for a silent peer ("Application timeout caused pair closure" when another
// wait of the process group timed out first); c10d's own wait says "Operation timed out!".
bool timed_out(const std::string& message) {
  return message.find("Timed out") != std::string::npos || message.find("timed out") != std::string::npos ||
         message.find("Application timeout") != std::string::npos;
}

}  // namespace

std::string lost_peer_reason(bool silent, int peer, std::chrono::milliseconds timeout) {
  if (silent)
    return (peer >= 0 ? peer_silent_text(peer) : "a peer rank sent nothing for ") + seconds(timeout) +
           " (hung, or its schedule does not match this one); the timeout is set by CommOptions::timeout";
  return peer >= 0 ? peer_closed_text(peer) : "a peer rank closed the connection (it died or failed)";
}

namespace {

// Why a wait failed: a silent peer, or a reset or closed connection for one that died.
std::string explain(const std::string& gloo_message, int peer, std::chrono::milliseconds timeout) {
  return lost_peer_reason(timed_out(gloo_message), peer, timeout);
}

}  // namespace

std::string failure_text(const std::string& what, const std::string& gloo_message, int peer,
                         std::chrono::milliseconds timeout) {
  return what + " failed: " + explain(gloo_message, peer, timeout) + " [gloo: " +
         gloo_message.substr(0, gloo_message.find('\n')) + "]";
}

void wait_work(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
               int peer) {
  try {
    work.wait(timeout);
  } catch (const std::exception& e) {
    throw CommError(where.prefix() + failure_text(what, e.what(), peer, timeout));
  }
}

// The lowest other rank on the host whose address Gloo's message names ("... peer [10.0.0.2]:41")
// when every rank's host is in the store; -1 when that cannot be told (no address, or a job too
// large to ask the store about every rank while it fails).
int rank_on_named_host(const Roll& roll, const std::string& gloo_message) {
  // The address is the last bracket of the first line (the first one names Gloo's source file).
  const std::string line = gloo_message.substr(0, gloo_message.find('\n'));
  const auto open = line.rfind('['), close = line.find(']', open == std::string::npos ? 0 : open);
  if (!roll.hosts || roll.world > 4096 || open == std::string::npos || close == std::string::npos) return -1;
  const std::string ip = line.substr(open + 1, close - open - 1);
  if (ip.empty() || ip.find_first_not_of("0123456789.:abcdef") != std::string::npos) return -1;
  try {
    for (int r = 0; r < roll.world; ++r) {
      const std::string key = kHostKey + std::to_string(r);
      if (r == roll.me || !roll.hosts->check({key})) continue;
      const auto v = roll.hosts->get(key);
      if (std::string(v.begin(), v.end()) == ip) return r;
    }
  } catch (const std::exception&) {
    // the store went with rank 0
  }
  return -1;
}

void wait_collective(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
                     const Roll& roll, std::chrono::milliseconds mark_after) {
  // In a group of two (a tie, or two replicas) a failure can only come from the other member.
  int peer = -1;
  if (roll.members.size() == 2) peer = roll.members[0] == roll.me ? roll.members[1] : roll.members[0];
  if (!roll.store || mark_after >= timeout) return wait_work(work, timeout, where, what, peer);
  try {
    work.wait(mark_after);
    return;
  } catch (const std::exception&) {
    // Finished meanwhile, or failed (a member died): its own result, reported as any other.
    if (work.isCompleted()) {
      try {
        work.wait(std::chrono::milliseconds(0));
      } catch (const std::exception& e) {
        if (peer < 0) peer = rank_on_named_host(roll, e.what());
        throw CommError(where.prefix() + failure_text(what, e.what(), peer, timeout));
      }
      return;
    }
  }
  try {
    roll.store->set(roll.key + std::to_string(roll.me), std::vector<std::uint8_t>{1});
  } catch (const std::exception&) {
    // the store is gone with rank 0: the wait below reports the failure
  }
  try {
    work.wait(timeout - mark_after);
  } catch (const std::exception& e) {
    std::vector<int> absent;
    try {
      for (int m : roll.members)
        if (m != roll.me && !roll.store->check({roll.key + std::to_string(m)})) absent.push_back(m);
    } catch (const std::exception&) {
      absent.clear();  // the store cannot say: fall back to what Gloo says
    }
    // A member that died closed its connections: Gloo says so, and that is the better message.
    if (absent.empty() || !timed_out(e.what())) {
      if (peer < 0 && !timed_out(e.what())) peer = rank_on_named_host(roll, e.what());
      throw CommError(where.prefix() + failure_text(what, e.what(), peer, timeout));
    }
    std::string who;
    for (std::size_t i = 0; i < absent.size(); ++i) who += (i ? ", " : "") + std::to_string(absent[i]);
    throw CommError(where.prefix() + what + " failed: " + (absent.size() == 1 ? "rank " : "ranks ") + who +
                    " did not arrive within " + seconds(timeout) +
                    " (hung before it, or its schedule does not match this one); the timeout is set by "
                    "CommOptions::timeout");
  }
}

}  // namespace tpipe::detail
