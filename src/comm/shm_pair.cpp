// Two ranks' messages through shared memory (see shm_pair.h).
#include "shm_pair.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace tpipe::detail {
namespace {

constexpr std::uint64_t kMagic = 0x7470697065736d31;  // "tpipesm1"
constexpr std::size_t kLine = 64;
constexpr std::size_t kPage = 4096;
constexpr auto kSlice = std::chrono::milliseconds(50);  // how often a sleeping wait looks at the peer

std::string system_error(const std::string& what, int err) { return what + ": " + std::strerror(err); }

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t seen, std::chrono::milliseconds slice) {
  timespec ts{0, static_cast<long>(std::chrono::nanoseconds(slice).count())};
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Nanoseconds the calling thread has spent runnable but waiting for a CPU (the kernel's
// schedstat), or -1 when the kernel does not say.
std::int64_t runqueue_wait_ns() {
  const int fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[96];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  unsigned long long run = 0, wait = 0;
  return std::sscanf(buf, "%llu %llu", &run, &wait) == 2 ? static_cast<std::int64_t>(wait) : -1;
}

enum class Polled { Ready, TimeUp, CoreWanted };

// Polls `ready` until it holds or `until` passes. Every 50 us the core goes to any other thread
// of this rank that wants it (its send lane, Gloo's). Every 1 ms it looks at how long this thread
// waited for the core: a quarter of the time or more means another process's thread runs there
// too (two jobs bound to the same cores), and polling would take the core from it: CoreWanted.
Polled poll(const std::function<bool()>& ready, std::chrono::steady_clock::time_point until) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kYieldEvery = std::chrono::microseconds(50);
  constexpr auto kLookEvery = std::chrono::milliseconds(1);
  const auto start = Clock::now();
  const std::int64_t waited0 = runqueue_wait_ns();
  auto yield_at = start + kYieldEvery, look_at = start + kLookEvery;
  for (unsigned i = 1;; ++i) {
    if (ready()) return Polled::Ready;
    cpu_relax();
    if (i % 64) continue;
    const auto now = Clock::now();
    if (now >= until) return Polled::TimeUp;
    if (now >= yield_at) {
      sched_yield();
      yield_at = now + kYieldEvery;
    }
    if (now >= look_at && waited0 >= 0) {
      look_at = now + kLookEvery;
      const auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(now - start).count();
      if (4 * (runqueue_wait_ns() - waited0) >= elapsed) return Polled::CoreWanted;
    }
  }
}

std::string read_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// Whether a process has exited: no such process, or one that is dead but not yet reaped by its
// parent (a zombie, which kill(pid, 0) still finds).
bool process_gone(std::int32_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;  // no /proc: only kill() tells
  const auto paren = stat.rfind(')');        // "pid (comm) S ...": the name may hold spaces
  return paren != std::string::npos && paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X');
}

std::string link_target(const char* path) {
  char buf[256];
  const ssize_t n = readlink(path, buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

struct ShmPair::Control {
  alignas(kLine) std::uint64_t magic;
  std::uint64_t ring_bytes;
  std::atomic<std::int32_t> pid[2];
  std::atomic<std::uint32_t> closed[2];
};

// The ring written by one side: `head` and `tail` count bytes ever written and read.
struct ShmPair::Ring {
  alignas(kLine) std::atomic<std::uint64_t> head;
  std::atomic<std::uint32_t> data_seq;  // bumped by the writer after each write
  std::atomic<std::uint32_t> reader_sleeps;
  alignas(kLine) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint32_t> room_seq;  // bumped by the reader after each read
  std::atomic<std::uint32_t> writer_sleeps;
};

namespace {

constexpr std::size_t kRingsAt = 256;
constexpr std::size_t kDataAt = kPage;
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4 && std::atomic<std::uint32_t>::is_always_lock_free);

std::size_t segment_bytes(std::size_t ring_bytes) { return kDataAt + 2 * ring_bytes; }

}  // namespace

ShmPair::ShmPair(int fd, void* base, std::size_t bytes, int side, std::string name)
    : fd_(fd),
      base_(base), bytes_(bytes), ring_bytes_((bytes - kDataAt) / 2), side_(side), name_(std::move(name)) {
  static_assert(sizeof(Control) <= kRingsAt && 2 * sizeof(Ring) <= kDataAt - kRingsAt);
  static_cast<Control*>(base_)->pid[side_].store(static_cast<std::int32_t>(getpid()));
}

std::unique_ptr<ShmPair> ShmPair::create(const std::string& name, std::size_t ring_bytes) {
  ring_bytes = (std::max<std::size_t>(ring_bytes, kPage) + kPage - 1) / kPage * kPage;
  const std::size_t bytes = segment_bytes(ring_bytes);
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error(system_error("creating shared memory " + name, errno));
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    shm_unlink(name.c_str());
    throw std::runtime_error(system_error(what + " of " + std::to_string(bytes >> 20) + " MiB in /dev/shm", err));
  };
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) fail("sizing shared memory", errno);
  if (const int err = posix_fallocate(fd, 0, kDataAt); err != 0) fail("reserving shared memory", err);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) fail("mapping shared memory", errno);
  auto* c = static_cast<Control*>(base);
  c->ring_bytes = ring_bytes;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  c->magic = kMagic;
  return std::unique_ptr<ShmPair>(new ShmPair(fd, base, bytes, 0, name));
}

std::unique_ptr<ShmPair> ShmPair::open(const std::string& name) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error(system_error("opening shared memory " + name, errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(kDataAt + 2 * kPage)) {
    ::close(fd);
    throw std::runtime_error("shared memory " + name + " is not a tpipe segment (too small)");
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  if (base == MAP_FAILED) {
    ::close(fd);
    throw std::runtime_error(system_error("mapping shared memory " + name, err));
  }
  const auto* c = static_cast<const Control*>(base);
  if (c->magic != kMagic || segment_bytes(c->ring_bytes) != bytes) {
    munmap(base, bytes);
    ::close(fd);
    throw std::runtime_error("shared memory " + name + " is not a tpipe segment");
  }
  return std::unique_ptr<ShmPair>(new ShmPair(fd, base, bytes, 1, name));
}

ShmPair::~ShmPair() {
  close();
  unlink();
  munmap(base_, bytes_);
  ::close(fd_);
}

void ShmPair::unlink() {
  if (side_ == 0 && !unlinked_) shm_unlink(name_.c_str());
  unlinked_ = true;
}

void ShmPair::close() {
  static_cast<Control*>(base_)->closed[side_].store(1);
  for (Ring* r : {&out(), &in()}) {
    r->data_seq.fetch_add(1);
    r->room_seq.fetch_add(1);
    futex_wake(&r->data_seq);
    futex_wake(&r->room_seq);
  }
}

ShmPair::Ring& ShmPair::out() const {
  return reinterpret_cast<Ring*>(static_cast<char*>(base_) + kRingsAt)[side_];
}
ShmPair::Ring& ShmPair::in() const {
  return reinterpret_cast<Ring*>(static_cast<char*>(base_) + kRingsAt)[1 - side_];
}

std::size_t ShmPair::room() const {
  const Ring& r = out();
  return ring_bytes_ - static_cast<std::size_t>(r.head.load() - r.tail.load());
}

void ShmPair::wait(Ring& ring, bool for_data, const std::function<bool()>& ready, const WaitLimit& limit) {
  auto* c = static_cast<Control*>(base_);
  const int peer = 1 - side_;
  auto& seq = for_data ? ring.data_seq : ring.room_seq;
  auto& sleeps = for_data ? ring.reader_sleeps : ring.writer_sleeps;
  for (;;) {
    const auto at = std::chrono::steady_clock::now();
    const bool spinning = at < limit.spin_until && at.time_since_epoch().count() >= no_polling_until_.load();
    const std::uint32_t seen = seq.load();
    if (!spinning) sleeps.store(1);  // a polling reader needs no wake-up call
    if (ready()) break;
    if (c->closed[peer].load())
      throw ShmLost(ShmLost::Why::PeerClosed, "the peer closed the shared-memory channel");
    const std::int32_t pid = c->pid[peer].load();
    if (pid > 0 && pid != getpid() && process_gone(pid))
      throw ShmLost(ShmLost::Why::PeerDied, "the peer's process " + std::to_string(pid) + " is gone");
    if (limit.stopping && limit.stopping()) throw ShmLost(ShmLost::Why::Stopping, "this rank is closing");
    const auto now = std::chrono::steady_clock::now();
    if (now >= limit.deadline) throw ShmLost(ShmLost::Why::TimedOut, "timed out");
    if (spinning) {  // one slice of polling, then the peer and the limits are looked at again
      const Polled p = poll(ready, std::min({limit.spin_until, limit.deadline, now + kSlice}));
      if (p == Polled::Ready) break;
      if (p == Polled::CoreWanted)
        no_polling_until_.store((std::chrono::steady_clock::now() + std::chrono::seconds(1)).time_since_epoch().count());
      continue;
    }
    futex_wait(&seq, seen, std::min<std::chrono::milliseconds>(
                               kSlice, std::chrono::duration_cast<std::chrono::milliseconds>(limit.deadline - now) +
                                           std::chrono::milliseconds(1)));
  }
  sleeps.store(0);
}

void ShmPair::write(const void* data, std::size_t n, const WaitLimit& limit) {
  if (!reserved_) {
    const auto at = static_cast<off_t>(kDataAt + static_cast<std::size_t>(side_) * ring_bytes_);
    if (const int err = posix_fallocate(fd_, at, static_cast<off_t>(ring_bytes_)); err != 0)
      throw std::runtime_error(system_error("reserving " + std::to_string(ring_bytes_ >> 20) +
                                                " MiB of /dev/shm for messages to a rank on this host",
                                            err));
    reserved_ = true;
  }
  Ring& r = out();
  char* ring = static_cast<char*>(base_) + kDataAt + static_cast<std::size_t>(side_) * ring_bytes_;
  const char* from = static_cast<const char*>(data);
  auto* c = static_cast<Control*>(base_);
  while (n > 0) {
    if (c->closed[1 - side_].load())
      throw ShmLost(ShmLost::Why::PeerClosed, "the peer closed the shared-memory channel");
    if (room() == 0) wait(r, false, [&] { return room() > 0; }, limit);
    const std::uint64_t head = r.head.load();
    const std::size_t k = std::min(n, room());
    const std::size_t at = static_cast<std::size_t>(head % ring_bytes_);
    const std::size_t first = std::min(k, ring_bytes_ - at);
    std::memcpy(ring + at, from, first);
    std::memcpy(ring, from + first, k - first);
    r.head.store(head + k);
    r.data_seq.fetch_add(1);
    if (r.reader_sleeps.load()) futex_wake(&r.data_seq);
    from += k;
    n -= k;
  }
}

void ShmPair::read(void* data, std::size_t n, const WaitLimit& limit) {
  Ring& r = in();
  const char* ring = static_cast<const char*>(base_) + kDataAt + static_cast<std::size_t>(1 - side_) * ring_bytes_;
  char* to = static_cast<char*>(data);
  auto available = [&] { return static_cast<std::size_t>(r.head.load() - r.tail.load()); };
  while (n > 0) {
    if (available() == 0) wait(r, true, [&] { return available() > 0; }, limit);
    const std::uint64_t tail = r.tail.load();
    const std::size_t k = std::min(n, available());
    const std::size_t at = static_cast<std::size_t>(tail % ring_bytes_);
    const std::size_t first = std::min(k, ring_bytes_ - at);
    std::memcpy(to, ring + at, first);
    std::memcpy(to + first, ring, k - first);
    r.tail.store(tail + k);
    r.room_seq.fetch_add(1);
    if (r.writer_sleeps.load()) futex_wake(&r.room_seq);
    to += k;
    n -= k;
  }
}

std::string shm_identity() {
  const std::string boot = read_line("/proc/sys/kernel/random/boot_id");
  const std::string mnt = link_target("/proc/self/ns/mnt"), pid = link_target("/proc/self/ns/pid"),
                    ipc = link_target("/proc/self/ns/ipc");
  if (boot.empty() || mnt.empty() || pid.empty() || ipc.empty()) return "";
  return boot + " " + mnt + " " + pid + " " + ipc;
}

}  // namespace tpipe::detail
