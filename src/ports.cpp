// Finding and checking TCP ports for the rendezvous (MASTER_PORT).
#include "tpipe/ports.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tpipe/error.h"

namespace tpipe {
namespace {

// A TCP socket bound to host:port, or -1 with errno set. Throws when the host does not resolve.
int bind_socket(const std::string& host, int port, bool reuse_addr) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found))
    throw ConfigError("cannot resolve master address '" + host + "': " + gai_strerror(rc));
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd >= 0 && reuse_addr) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd >= 0 && bind(fd, found->ai_addr, found->ai_addrlen) != 0) {
    const int err = errno;
    close(fd);
    fd = -1;
    errno = err;
  }
  freeaddrinfo(found);
  return fd;
}

}  // namespace

int free_port(const std::string& addr) {
  const int fd = bind_socket(addr, 0, false);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (fd < 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    const std::string error = "cannot find a free port on " + addr + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    throw Error(error);
  }
  close(fd);
  return ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

// Binding tells more than connecting: it also sees a socket that is bound but not yet listening.
// SO_REUSEADDR, as TCPStore sets it, keeps connections in TIME_WAIT from counting as "in use".
// An address that is not local (EADDRNOTAVAIL) cannot be checked from here and counts as free.
bool port_in_use(const std::string& addr, int port) {
  const int fd = bind_socket(addr, port, true);
  if (fd < 0) return errno == EADDRINUSE;
  close(fd);
  return false;
}

}  // namespace tpipe
