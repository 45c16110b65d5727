#include "rng_state.h"

#include <mutex>

namespace tpipe {
namespace {

at::Tensor state_of(at::Generator g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void set_state(at::Generator g, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

}  // namespace

RngStates capture_rng(const std::vector<at::Generator>& generators) {
  RngStates s{generators, {}};
  for (const auto& g : generators) s.states.push_back(state_of(g));
  return s;
}

RngReplay::RngReplay(const RngStates& saved) : current_(capture_rng(saved.generators)) {
  for (std::size_t i = 0; i < saved.generators.size(); ++i) set_state(saved.generators[i], saved.states[i]);
}

RngReplay::~RngReplay() {
  for (std::size_t i = 0; i < current_.generators.size(); ++i) set_state(current_.generators[i], current_.states[i]);
}

}  // namespace tpipe
