// Who a rank is, by its launcher's convention (see rank_env.h).
#include "tpipe/comm/rank_env.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "tpipe/error.h"

namespace tpipe {
namespace {

int whole_number(const std::string& name, const std::string& v) {
  try {
    std::size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw ConfigError(name + "='" + v + "' is not a whole number");
}

// Reads the variables of one launcher, found by `found` being set.
struct Reader {
  const EnvLookup& env;
  std::string launcher, found;
  std::string need(const std::string& name, const std::string& why = "") const {
    if (auto v = env(name)) return *v;
    throw ConfigError(name + " is not set, though " + found + " is (" + launcher + ")" +
                      (why.empty() ? "" : ": " + why));
  }
  int number(const std::string& name) const { return whole_number(name, need(name)); }
  int number_or(const std::string& name, int fallback) const {
    const auto v = env(name);
    return v ? whole_number(name, *v) : fallback;
  }
};

}  // namespace

std::string first_slurm_host(const std::string& list) {
  // Hosts are separated by commas outside brackets; a bracket holds numbers and ranges.
  std::size_t end = 0;
  int depth = 0;
  for (; end < list.size() && !(list[end] == ',' && depth == 0); ++end) depth += list[end] == '[' ? 1 : list[end] == ']' ? -1 : 0;
  const std::string host = list.substr(0, end);
  const auto open = host.find('[');
  if (open == std::string::npos) {
    if (host.empty() || host.find(']') != std::string::npos) throw ConfigError("cannot read the Slurm host list '" + list + "'");
    return host;
  }
  const auto close = host.find(']', open);
  if (close == std::string::npos || open == 0) throw ConfigError("cannot read the Slurm host list '" + list + "'");
  const std::string inside = host.substr(open + 1, close - open - 1);
  const std::string first = inside.substr(0, inside.find_first_of(",-"));
  if (first.empty() || first.find_first_not_of("0123456789") != std::string::npos)
    throw ConfigError("cannot read the Slurm host list '" + list + "'");
  return host.substr(0, open) + first + host.substr(close + 1);
}

RankEnv rank_env(const EnvLookup& env) {
  RankEnv r;
  if (env("RANK") || env("WORLD_SIZE")) {
    const Reader in{env, "torchrun", env("RANK") ? "RANK" : "WORLD_SIZE"};
    r = {in.number("RANK"), in.number("WORLD_SIZE"), in.need("MASTER_ADDR"), in.number("MASTER_PORT"),
         in.number_or("LOCAL_RANK", -1), "torchrun"};
  } else if (env("SLURM_PROCID")) {
    const Reader in{env, "Slurm", "SLURM_PROCID"};
    r.rank = in.number("SLURM_PROCID");
    r.world_size = in.number("SLURM_NTASKS");
    r.local_rank = in.number_or("SLURM_LOCALID", -1);
    if (auto addr = env("MASTER_ADDR")) {
      r.master_addr = *addr;
    } else {
      const auto list = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST");
      r.master_addr = list ? first_slurm_host(*list)
                           : in.need("MASTER_ADDR", "nor is SLURM_JOB_NODELIST, whose first host would be rank 0's");
    }
    r.master_port = in.number_or("MASTER_PORT", 20000 + in.number_or("SLURM_JOB_ID", 9500) % 10000);
    r.launcher = "Slurm";
  } else if (env("OMPI_COMM_WORLD_RANK")) {
    const Reader in{env, "Open MPI", "OMPI_COMM_WORLD_RANK"};
    r = {in.number("OMPI_COMM_WORLD_RANK"), in.number("OMPI_COMM_WORLD_SIZE"),
         in.need("MASTER_ADDR", "the address of rank 0's host; mpirun -x MASTER_ADDR=HOST passes it"),
         in.number_or("MASTER_PORT", 29500), in.number_or("OMPI_COMM_WORLD_LOCAL_RANK", -1), "Open MPI"};
  } else {
    throw ConfigError("RANK is not set: start the ranks with `tpipe run -n N -- PROGRAM` (or torchrun, which sets "
                      "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; srun, which sets SLURM_PROCID, SLURM_NTASKS; or "
                      "mpirun, which sets OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, with MASTER_ADDR)");
  }
  if (r.world_size < 1 || r.rank < 0 || r.rank >= r.world_size)
    throw ConfigError(r.launcher + " says rank " + std::to_string(r.rank) + " of a world of " +
                      std::to_string(r.world_size) + ": a rank is in [0, world size)");
  if (r.master_port < 1 || r.master_port > 65535)
    throw ConfigError("MASTER_PORT " + std::to_string(r.master_port) + " is not a port (1 to 65535)");
  return r;
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
}

std::string local_address_toward(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &found) != 0 || !found) return "";
  std::string local;
  // Connecting a UDP socket sends nothing: it only asks the kernel for the route and its source.
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in me{};
    socklen_t len = sizeof me;
    char text[INET_ADDRSTRLEN];
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) == 0 &&
        inet_ntop(AF_INET, &me.sin_addr, text, sizeof text))
      local = text;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return local;
}

}  // namespace tpipe
