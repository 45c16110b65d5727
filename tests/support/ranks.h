// Ranks as threads of one test process, sharing a c10d::HashStore: the same code path as real
// processes, without ports. Each rank's Communicator is destroyed as soon as its function returns
// or throws, so its peers see the connection close instead of waiting for the timeout.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tpipe/comm/communicator.h"

namespace tpipe::testing {

// Runs fn on `world` threads; returns one entry per rank: "" on success, else the error text.
std::vector<std::string> run_ranks(int world, const std::function<void(Communicator&)>& fn,
                                   const CommOptions& options = {});

// Same, but fails the current test with every rank's error.
void expect_ranks_ok(int world, const std::function<void(Communicator&)>& fn, const CommOptions& options = {});

}  // namespace tpipe::testing
