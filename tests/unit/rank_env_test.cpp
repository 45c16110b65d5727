// Who a rank is, by each launcher's convention, as a pure function of the environment.
#include "tpipe/comm/rank_env.h"

#include <gtest/gtest.h>

#include <map>

#include "tpipe/error.h"

namespace {

using tpipe::rank_env;
using tpipe::RankEnv;

tpipe::EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    rank_env(env_of(vars));
  } catch (const tpipe::ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_env(const RankEnv& got, int rank, int world, const std::string& addr, int port, int local,
                const std::string& launcher) {
  EXPECT_EQ(got.rank, rank);
  EXPECT_EQ(got.world_size, world);
  EXPECT_EQ(got.master_addr, addr);
  EXPECT_EQ(got.master_port, port);
  EXPECT_EQ(got.local_rank, local);
  EXPECT_EQ(got.launcher, launcher);
}

TEST(RankEnv, Torchrun) {
  expect_env(rank_env(env_of({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"MASTER_ADDR", "10.0.0.1"},
                              {"MASTER_PORT", "29400"}, {"LOCAL_RANK", "1"}})),
             5, 8, "10.0.0.1", 29400, 1, "torchrun");
  expect_env(rank_env(env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}})), 0, 1,
             "h", 1, -1, "torchrun");
}

TEST(RankEnv, TorchrunWinsOverSlurmItRunsUnder) {
  expect_env(rank_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "29500"},
                              {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}})),
             3, 4, "a", 29500, -1, "torchrun");
}

TEST(RankEnv, SlurmTakesTheFirstHostAndAPortFromTheJob) {
  expect_env(rank_env(env_of({{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "2"},
                              {"SLURM_JOB_NODELIST", "gpu[007-010,12],login1"}, {"SLURM_JOB_ID", "123456"}})),
             6, 16, "gpu007", 23456, 2, "Slurm");
  // MASTER_ADDR and MASTER_PORT, when set, win; SLURM_NODELIST is the older name of the list.
  expect_env(rank_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "n1,n2"},
                              {"MASTER_ADDR", "head"}, {"MASTER_PORT", "4000"}})),
             0, 2, "head", 4000, -1, "Slurm");
  expect_env(rank_env(env_of({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "n1,n2"}})), 1, 2,
             "n1", 29500, -1, "Slurm");
}

TEST(RankEnv, OpenMpiNeedsMasterAddr) {
  expect_env(rank_env(env_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"MASTER_ADDR", "node0"}})),
             2, 4, "node0", 29500, 0, "Open MPI");
  EXPECT_EQ(error_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"}}),
            "MASTER_ADDR is not set, though OMPI_COMM_WORLD_RANK is (Open MPI): the address of rank 0's host; "
            "mpirun -x MASTER_ADDR=HOST passes it");
}

TEST(RankEnv, FirstSlurmHost) {
  EXPECT_EQ(tpipe::first_slurm_host("node01"), "node01");
  EXPECT_EQ(tpipe::first_slurm_host("node[01-04],gpu5"), "node01");
  EXPECT_EQ(tpipe::first_slurm_host("nid[00012,00020-00021]"), "nid00012");
  EXPECT_EQ(tpipe::first_slurm_host("rack[3-4]-n[1-2]"), "rack3-n[1-2]") << "only the first bracket is expanded";
  for (const char* bad : {"", "[1-2]", "node[", "node[a-b]", "node]"})
    EXPECT_THROW(tpipe::first_slurm_host(bad), tpipe::ConfigError) << bad;
}

TEST(RankEnv, MistakesNameTheVariable) {
  EXPECT_EQ(error_of({}),
            "RANK is not set: start the ranks with `tpipe run -n N -- PROGRAM` (or torchrun, which sets RANK, "
            "WORLD_SIZE, MASTER_ADDR, MASTER_PORT; srun, which sets SLURM_PROCID, SLURM_NTASKS; or mpirun, which "
            "sets OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, with MASTER_ADDR)");
  EXPECT_EQ(error_of({{"RANK", "0"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
            "WORLD_SIZE is not set, though RANK is (torchrun)");
  EXPECT_EQ(error_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
            "RANK='x' is not a whole number");
  EXPECT_EQ(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
            "torchrun says rank 2 of a world of 2: a rank is in [0, world size)");
  EXPECT_EQ(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}),
            "MASTER_PORT 70000 is not a port (1 to 65535)");
  EXPECT_EQ(error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}),
            "MASTER_ADDR is not set, though SLURM_PROCID is (Slurm): nor is SLURM_JOB_NODELIST, whose first host "
            "would be rank 0's");
}

TEST(RankEnv, LocalAddressTowardLoopbackIsLoopback) {
  EXPECT_EQ(tpipe::local_address_toward("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(tpipe::local_address_toward("no-such-host.invalid"), "");
}

}  // namespace
