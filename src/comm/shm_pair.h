// Private to src/comm: two ranks on one host exchange their messages through a shared-memory
// segment instead of a socket. The segment holds a control block and two rings of bytes, one per
// direction; each ring has one writer and one reader, so it needs no lock: the writer copies in
// and advances `head`, the reader copies out and advances `tail`, and a side that must wait
// (for data, or for room) sleeps on a futex that the other side wakes only when it knows someone
// sleeps. Torch-free.
//
// Nothing here can hang: a wait sleeps in short slices and gives up when the peer has closed its
// side (its Communicator went away), when the peer's process is gone, when the caller is
// stopping, or at the deadline; it then throws ShmLost saying which.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

namespace tpipe::detail {

struct ShmLost : std::runtime_error {
  enum class Why { PeerClosed, PeerDied, TimedOut, Stopping };
  ShmLost(Why w, const std::string& text) : std::runtime_error(text), why(w) {}
  Why why;
};

// What a wait gives up on besides the peer: the deadline and the caller's own stop flag; and
// until when it polls instead of sleeping (a core that sleeps on a VM is lent to other guests and
// comes back with cold caches: see CommOptions::spin_wait).
struct WaitLimit {
  std::chrono::steady_clock::time_point deadline;
  std::function<bool()> stopping;  // may be empty
  std::chrono::steady_clock::time_point spin_until{};  // the epoch: sleep at once
};

class ShmPair {
 public:
  // side 0 creates the segment (of two rings of `ring_bytes`), side 1 opens it. Both throw
  // std::runtime_error with the system's reason. A ring's pages are reserved by its writer at its
  // first write (a pair that never talks costs no memory), so that a full /dev/shm fails there,
  // with that reason, rather than with SIGBUS.
  static std::unique_ptr<ShmPair> create(const std::string& name, std::size_t ring_bytes);
  static std::unique_ptr<ShmPair> open(const std::string& name);
  ~ShmPair();  // closes this side (the peer's waits end at once) and unmaps
  ShmPair(const ShmPair&) = delete;
  ShmPair& operator=(const ShmPair&) = delete;

  // Removes the segment's name; both sides keep their mapping. Idempotent.
  void unlink();
  // Marks this side closed and wakes the peer; later waits of the peer on it fail.
  void close();

  std::size_t capacity() const { return ring_bytes_; }
  // Bytes that can be written toward the peer now without waiting.
  std::size_t room() const;
  // Writes n bytes toward the peer, waiting for room as needed (a message larger than the ring
  // streams through it).
  void write(const void* data, std::size_t n, const WaitLimit& limit);
  // Reads n bytes from the peer, waiting for them as needed.
  void read(void* data, std::size_t n, const WaitLimit& limit);

 private:
  struct Control;
  struct Ring;
  ShmPair(int fd, void* base, std::size_t bytes, int side, std::string name);
  Ring& out() const;
  Ring& in() const;
  // Polls, then sleeps, until `ready()` or a limit.
  void wait(Ring& ring, bool for_data, const std::function<bool()>& ready, const WaitLimit& limit);

  int fd_;
  bool reserved_ = false;
  void* base_;
  std::size_t bytes_;
  std::size_t ring_bytes_;
  int side_;
  std::string name_;
  bool unlinked_ = false;
  // A wait that found another thread wanting its core stopped polling; the waits until then sleep.
  std::atomic<std::chrono::steady_clock::rep> no_polling_until_{0};  // steady_clock ticks
};

// What two ranks must share to reach each other this way: one boot of one machine and the same
// mount, PID and IPC namespaces (so that /dev/shm and process ids mean the same). Empty when it
// cannot be told.
std::string shm_identity();

}  // namespace tpipe::detail
