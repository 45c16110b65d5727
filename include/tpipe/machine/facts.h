// The live machine as tuning.h needs it: CPU flags, usable cores, which BLAS this process loaded
// and, for OpenBLAS, the kernel it picked (looked up at run time, so any other BLAS still works).
#pragma once

#include <map>
#include <string>

#include "tpipe/machine/tuning.h"

namespace tpipe {

struct BlasInfo {
  std::string library;   // the file that provides sgemm_ in this process ("" when none is loaded)
  std::string config;    // openblas_get_config(), "" for another BLAS
};

MachineFacts read_machine_facts();
BlasInfo read_blas_info();
std::map<std::string, std::string> environment_map();

// Sets the threads of this process's BLAS when it keeps threads of its own (OpenBLAS built with
// pthreads: at::set_num_threads does not reach them) and returns how many it had; 0 when this
// process has no such BLAS. A profile in the front process then computes as a rank will.
int set_blas_threads(int threads);

// choose_rank_tuning for this machine and environment.
RankTuning tune_local_ranks(int local_ranks);

}  // namespace tpipe
