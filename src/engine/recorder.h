// Private to the engine: records what the executor does, as trace events. It observes the loop
// from outside (begin / end around each action, plus the waits for data inside a consumer) and
// is inert when recording is off. Times are converted to rank 0's clock with the offset found at
// start-up (sync_clocks), so all ranks' events lie on one time line.
#pragma once

#include <chrono>
#include <vector>

#include "tpipe/comm/communicator.h"
#include "tpipe/trace/record.h"

namespace tpipe {

class Recorder {
 public:
  bool on() const { return on_; }
  // Collective over all ranks: estimates this rank's offset to rank 0 (best of several ping-pongs)
  // and takes rank 0's start as the zero of time. Turns recording on.
  void sync_clocks(Communicator& comm);

  void clear() { events_.clear(); }
  bool synced() const { return synced_; }
  void set_on(bool on) { on_ = on && synced_; }
  void begin() {
    if (on_) start_ = now_us();
  }
  // A consumer waited for a received payload: recorded as the RECV action over the wait.
  void waited(int rank, const Action& recv, double since_us, std::int64_t bytes, int peer);
  void end(int rank, const Action& a, std::int64_t bytes, std::int64_t stash_bytes, int peer,
           std::int64_t activation_bytes = -1, std::int64_t memory_bytes = -1);
  double now_us() const;

  // Rank 0 receives every rank's events; returns the whole step there (empty elsewhere).
  trace::StepTrace gather(Communicator& comm, std::int64_t step, const std::vector<trace::RankInfo>& ranks);

 private:
  bool on_ = false;
  bool synced_ = false;
  double offset_us_ = 0;  // add to the local clock to get rank 0's
  double clock_error_us_ = 0;  // how far offset_us_ may be off (half the best round trip)
  double epoch_us_ = 0;   // rank 0's clock at start-up
  double start_ = 0;
  std::vector<trace::Event> events_;
};

}  // namespace tpipe
