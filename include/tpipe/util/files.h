// File writes that readers can trust: traces, metrics and checkpoints are read while a run is
// still writing them (or after it was killed), so a file is either the old or the new content,
// never half of one, and lines appended by several ranks never interleave.
#pragma once

#include <cstddef>
#include <string>

namespace tpipe {

// Writes `content` to a temporary file next to `path`, flushes it to disk and renames it over
// `path`. Missing parent directories are created. Throws ConfigError
// ("cannot write <path>: <reason>") on failure and leaves no temporary file behind.
void write_file_atomic(const std::string& path, const std::string& content);

// The same, streamed: write() pieces into a temporary file next to `path`; commit() flushes it
// to disk and renames it over `path`. Destroyed without commit(), it removes the temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, std::size_t size);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// Appends `line` + '\n' with a single O_APPEND write, so lines from concurrent writers (threads
// or processes) stay whole. Missing parent directories are created. Same errors as above.
void append_line(const std::string& path, const std::string& line);

// An exclusive lock on directory `dir` (a file `.lock` in it, created with the directory) held
// while this object lives, so two runs never write into one directory at once. Throws
// ConfigError naming `who` and the process holding it. Released when the process ends, however.
class DirectoryLock {
 public:
  DirectoryLock(const std::string& dir, const std::string& who);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace tpipe
