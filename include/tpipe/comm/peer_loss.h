// How a rank says that it lost a peer, written by the communicator into its errors and read back
// by the launcher, which can then name the node the lost peer was on (a dead or unreachable node
// shows on the other nodes as their ranks losing peers). Torch-free.
#pragma once

#include <optional>
#include <string>

namespace tpipe {

// "rank 3 closed the connection (it died or failed)"
std::string peer_closed_text(int peer);
// "rank 3 sent nothing for 10 s (hung, or ...)"'s start: "rank 3 sent nothing for "
std::string peer_silent_text(int peer);

// The peer named by the first of these phrases in `text`, if any.
std::optional<int> lost_peer(const std::string& text);

}  // namespace tpipe
