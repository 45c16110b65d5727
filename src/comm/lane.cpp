// Lanes and their Stopper (see lane.h).
#include "lane.h"

#include <torch/csrc/distributed/c10d/Work.hpp>

namespace tpipe::detail {

Lane::Lane() : thread_([this] { loop(); }) {}

Lane::~Lane() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Lane::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void Lane::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return jobs_.empty() && !busy_; });
}

void Lane::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, nothing left
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    busy_ = true;
    lock.unlock();
    job();  // jobs catch their own errors
    lock.lock();
    busy_ = false;
    if (jobs_.empty()) idle_cv_.notify_all();
  }
}

bool Stopper::enter(c10d::Work* w) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return false;
  waiting_.insert(w);
  return true;
}

void Stopper::leave(c10d::Work* w) {
  std::lock_guard<std::mutex> lock(mu_);
  waiting_.erase(w);
}

void Stopper::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  for (c10d::Work* w : waiting_) w->abort();  // Gloo: the pending wait returns false at once
}

bool Stopper::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

}  // namespace tpipe::detail
