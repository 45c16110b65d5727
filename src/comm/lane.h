// Private to src/comm: a lane is one thread that runs jobs in the order they were posted. The
// Communicator gives each peer a lane for receives and one for sends, so that waiting on Gloo
// (whose point-to-point Work completes only inside wait()) happens off the engine's thread:
// a receive's data is fetched as soon as its header arrives, and a send's tensors are released
// as soon as the peer has taken them. One lane per peer keeps a peer's messages in order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

namespace c10d {
class Work;
}

namespace tpipe::detail {

class Lane {
 public:
  Lane();
  ~Lane();  // runs the jobs already posted, then joins (abort their waits first, see Stopper)
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  void post(std::function<void()> job);
  void drain();  // returns once every job posted so far has run

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

// Lets a Communicator that is going away wake every lane blocked in a Gloo wait: a wait is
// entered through here, and stop() aborts the ones in progress and refuses new ones.
class Stopper {
 public:
  // False once stopping: the caller must not wait.
  bool enter(c10d::Work* w);
  void leave(c10d::Work* w);
  void stop();
  bool stopping();

 private:
  std::mutex mu_;
  bool stopping_ = false;
  std::set<c10d::Work*> waiting_;
};

}  // namespace tpipe::detail
