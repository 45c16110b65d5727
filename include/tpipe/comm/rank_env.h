// Who a rank is, from the variables its launcher set: a pure function of the environment, so
// every convention is tested without starting anything. Looked for in this order:
//   torchrun / tpipe run   RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (LOCAL_RANK)
//   Slurm (srun)           SLURM_PROCID, SLURM_NTASKS (SLURM_LOCALID); MASTER_ADDR, else the first
//                          host of SLURM_JOB_NODELIST (or SLURM_NODELIST, compressed "node[01-04]"
//                          form understood); MASTER_PORT, else 20000 + SLURM_JOB_ID % 10000 (so
//                          two jobs sharing a node do not collide)
//   Open MPI (mpirun)      OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE (OMPI_COMM_WORLD_LOCAL_RANK);
//                          MASTER_ADDR (mpirun gives no host list), MASTER_PORT else 29500
// torchrun's variables win when several are set (torchrun started under srun sets its own).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace tpipe {

struct RankEnv {
  int rank = 0;
  int world_size = 1;
  std::string master_addr;
  int master_port = 0;
  int local_rank = -1;    // -1: not said
  std::string launcher;   // "torchrun", "Slurm" or "Open MPI": which convention was found
};

// Returns a variable's value, or std::nullopt when it is unset or empty.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Throws ConfigError naming the variable that is missing or malformed (and the convention it
// belongs to), or, when none is found, the variables each launcher sets.
RankEnv rank_env(const EnvLookup& env);

// The process's own environment (getenv).
EnvLookup process_env();

// The first host of a Slurm host list: "node[01-04,07],gpu5" -> "node01". Throws ConfigError for
// a list it cannot read.
std::string first_slurm_host(const std::string& nodelist);

// The local address this machine uses to reach `host` (the interface a rendezvous should bind to
// on a machine with several), or "" when it cannot be found (host unknown, no route).
std::string local_address_toward(const std::string& host);

}  // namespace tpipe
