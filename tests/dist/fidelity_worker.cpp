// One rank of the multi-process fidelity test, started by `tpipe run -n P -- fidelity_worker ...`:
// trains the fidelity model pipelined and compares its own stage with a single-process reference
// it computes itself. Exit 0 only when the relative error is <= 1e-10 and the losses match, and
// the messages went the way TPIPE_TRANSPORT says.
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "fidelity_model.h"

int main(int argc, char** argv) {
  using namespace tpipe;
  using namespace tpipe::testing;
  torch::set_num_threads(1);
  std::string schedule = argc > 1 ? argv[1] : "1f1b";
  const int m = argc > 2 ? std::atoi(argv[2]) : 4;
  const int dp = argc > 3 ? std::atoi(argv[3]) : 1;
  const int batch = 14, steps = 3;
  try {
    auto comm = Communicator::from_env();
    // The ranks of `tpipe run` share this host: their messages go through shared memory, unless
    // TPIPE_TRANSPORT=gloo asks for Gloo's sockets.
    const char* transport = std::getenv("TPIPE_TRANSPORT");
    const bool want_shm = !(transport && std::string(transport) == "gloo");
    for (int q = 0; q < comm->world_size(); ++q)
      if (q != comm->rank() && comm->shares_memory_with(q) != want_shm) {
        std::cerr << "rank " << comm->rank() << ": messages to rank " << q << " go through "
                  << (want_shm ? "Gloo" : "shared memory") << std::endl;
        return 1;
      }
    EngineOptions o;
    o.schedule = schedule;
    o.microbatches = m;
    o.dp = dp;
    std::unique_ptr<PipelineEngine> engine;
    const Trace got = pipelined_run(fidelity_model(), *comm, o, batch, steps, &engine);
    std::string worst;
    const double err = max_relative_error(got, reference_run(fidelity_model(), batch, steps), &worst);
    std::cout << "stage " << engine->stage() << " of " << engine->num_stages() << ", " << got.weights.size()
              << " parameters, max relative error " << err << " (" << worst << ")" << std::endl;
    if (!(err <= 1e-10) || got.weights.empty()) return 1;
  } catch (const std::exception& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  }
  return 0;
}
