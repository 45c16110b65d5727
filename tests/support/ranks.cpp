// Thread ranks for tests (see ranks.h).
#include "ranks.h"

#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <thread>

namespace tpipe::testing {

std::vector<std::string> run_ranks(int world, const std::function<void(Communicator&)>& fn,
                                   const CommOptions& options) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        Communicator comm(r, world, store, options);
        fn(comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "unknown error";
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

void expect_ranks_ok(int world, const std::function<void(Communicator&)>& fn, const CommOptions& options) {
  const auto errors = run_ranks(world, fn, options);
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace tpipe::testing
