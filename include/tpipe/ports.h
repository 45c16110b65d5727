// TCP ports for the rendezvous: pick a free one, or check that a chosen one is free.
#pragma once

#include <string>

namespace tpipe {

// A free TCP port on `addr` (binds port 0 and reads back what the kernel chose).
int free_port(const std::string& addr = "127.0.0.1");

// True when something already holds addr:port (listening, or bound and about to listen).
bool port_in_use(const std::string& addr, int port);

}  // namespace tpipe
