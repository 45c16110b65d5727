// Atomic whole-file writes and whole-line appends with POSIX calls (see files.h).
#include "tpipe/util/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>

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

void write_file_atomic(const std::string& path, const std::string& content) {
  make_parent_dirs(path);
  const std::string tmp = temp_name(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) fail(path, errno);

  int err = write_all(fd, content.data(), content.size());
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    fail(path, err);
  }
  sync_dir_of(path);
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

}  // namespace tpipe
