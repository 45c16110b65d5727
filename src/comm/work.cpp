// Waiting on c10d work with errors a user can act on (see work.h).
#include "work.h"

#include <cstdio>

namespace tpipe::detail {
namespace {

std::string seconds(std::chrono::milliseconds t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(t.count()) / 1000.0);
  return buf;
}

// Why a wait failed: Gloo says "Timed out" for a silent peer and reports a reset or closed
// connection for one that died.
std::string explain(const std::string& gloo_message, int peer, std::chrono::milliseconds timeout) {
  const std::string who = peer >= 0 ? "rank " + std::to_string(peer) : "a peer rank";
  // "Application timeout caused pair closure": another wait of this process group timed out first.
  if (gloo_message.find("Timed out") != std::string::npos || gloo_message.find("timed out") != std::string::npos ||
      gloo_message.find("Application timeout") != std::string::npos)
    return who + " sent nothing for " + seconds(timeout) +
           " (hung, or its schedule does not match this one); the timeout is set by CommOptions::timeout";
  return who + " closed the connection (it died or failed)";
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

}  // namespace tpipe::detail
