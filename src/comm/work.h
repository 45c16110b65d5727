// Private to src/comm: waiting on a c10d Work with errors that say who and what.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <string>

#include "tpipe/error.h"

namespace tpipe::detail {

// "receiving ... failed: rank 2 closed the connection (it died or failed) [gloo: ...]".
std::string failure_text(const std::string& what, const std::string& gloo_message, int peer,
                         std::chrono::milliseconds timeout);

// Waits up to `timeout`; on failure throws CommError: where + what + why (peer -1: unknown).
void wait_work(c10d::Work& work, std::chrono::milliseconds timeout, const Where& where, const std::string& what,
               int peer);

}  // namespace tpipe::detail
