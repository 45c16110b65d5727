// How a rank says that it lost a peer (see peer_loss.h).
#include "tpipe/comm/peer_loss.h"

#include <cctype>

namespace tpipe {
namespace {

constexpr const char* kClosed = " closed the connection (it died or failed)";
constexpr const char* kSilent = " sent nothing for ";

}  // namespace

std::string peer_closed_text(int peer) { return "rank " + std::to_string(peer) + kClosed; }
std::string peer_silent_text(int peer) { return "rank " + std::to_string(peer) + kSilent; }

std::optional<int> lost_peer(const std::string& text) {
  for (std::size_t at = text.find("rank "); at != std::string::npos; at = text.find("rank ", at + 1)) {
    std::size_t end = at + 5;
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
    if (end == at + 5 || end - at - 5 > 9) continue;
    const std::string rest = text.substr(end);
    if (rest.rfind(kClosed, 0) == 0 || rest.rfind(kSilent, 0) == 0) return std::stoi(text.substr(at + 5, end - at - 5));
  }
  return std::nullopt;
}

}  // namespace tpipe
