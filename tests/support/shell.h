// Running a command from a test: its exit status and everything it printed, stdout and stderr
// interleaved as a user would see them.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace tpipe::testing {

struct Output {
  int status;  // the exit status, -1 when killed by a signal
  std::string text;
};

inline Output sh(const std::string& cmd) {
  std::FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string text;
  char buf[4096];
  while (p && std::fgets(buf, sizeof buf, p)) text += buf;
  const int st = p ? pclose(p) : -1;
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, text};
}

}  // namespace tpipe::testing
