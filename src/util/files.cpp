// Atomic whole-file writes and whole-line appends with POSIX calls (see files.h).
#include "tpipe/util/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "tpipe/error.h"

namespace tpipe {
namespace {

[[noreturn]] void fail(const std::string& path, int err) {
  throw ConfigError("cannot write " + path + ": " + std::generic_category().message(err));
}

void make_parent_dirs(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) throw ConfigError("cannot write " + path + ": " + ec.message());
}

// Retries after signals and short writes; returns 0 or the errno of the failure.
int write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

// Ranks may be threads of one process writing the same path, so the pid alone would not keep
// their temporary files apart.
std::string temp_name(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

// Makes the rename itself durable; a failure here loses nothing already visible, so it is not
// reported.
void sync_dir_of(const std::string& path) {
  auto dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(temp_name(path_)) {
  make_parent_dirs(path_);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) fail(path_, errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, std::size_t size) {
  if (const int err = write_all(fd_, static_cast<const char*>(data), size)) fail(path_, err);
}

void AtomicFile::commit() {
  int err = ::fsync(fd_) != 0 ? errno : 0;
  if (::close(fd_) != 0 && err == 0) err = errno;
  fd_ = -1;
  if (err == 0 && ::rename(tmp_.c_str(), path_.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp_.c_str());
    fail(path_, err);
  }
  sync_dir_of(path_);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content.data(), content.size());
  f.commit();
}

void append_line(const std::string& path, const std::string& line) {
  make_parent_dirs(path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) fail(path, errno);
  // One buffer, one write: O_APPEND makes positioning and writing one atomic step, so a line
  // lands whole. (A short write only happens when the disk is full; the rest then follows.)
  const std::string buf = line + '\n';
  int err = write_all(fd, buf.data(), buf.size());
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) fail(path, err);
}

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& who) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw ConfigError("cannot write " + path + ": " + std::strerror(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    const std::string holder = n > 0 ? " (pid " + std::string(buf, static_cast<std::size_t>(n)) + ")" : "";
    ::close(fd_);
    throw ConfigError("another " + who + holder + " is writing to " + dir + "; wait for it to end or give this run "
                      "another directory");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // the lock holds without the pid; it only makes the message above less precise
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace tpipe
