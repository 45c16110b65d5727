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

// Why a wait failed: a silent peer, or a reset or closed connection for one that died.
std::string explain(const std::string& gloo_message, int peer, std::chrono::milliseconds timeout) {
  if (timed_out(gloo_message))
    return (peer >= 0 ? peer_silent_text(peer) : "a peer rank sent nothing for ") + seconds(timeout) +
           " (hung, or its schedule does not match this one); the timeout is set by CommOptions::timeout";
  return peer >= 0 ? peer_closed_text(peer) : "a peer rank closed the connection (it died or failed)";
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

void wait_collective(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
                     const Roll& roll, std::chrono::milliseconds mark_after) {
  if (!roll.store || mark_after >= timeout) return wait_work(work, timeout, where, what, -1);
  try {
    work.wait(mark_after);
    return;
  } catch (const std::exception&) {
    // Finished meanwhile, or failed (a member died): its own result, reported as any other.
    if (work.isCompleted()) return wait_work(work, timeout, where, what, -1);
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
    if (absent.empty() || !timed_out(e.what()))
      throw CommError(where.prefix() + failure_text(what, e.what(), -1, timeout));
    std::string who;
    for (std::size_t i = 0; i < absent.size(); ++i) who += (i ? ", " : "") + std::to_string(absent[i]);
    throw CommError(where.prefix() + what + " failed: " + (absent.size() == 1 ? "rank " : "ranks ") + who +
                    " did not arrive within " + seconds(timeout) +
                    " (hung before it, or its schedule does not match this one); the timeout is set by "
                    "CommOptions::timeout");
  }
}

}  // namespace tpipe::detail
