// A rank for the launcher drills (tests/cli/launcher_cli_test.cpp), without LibTorch so that it
// builds in a second. It reads RANK as every rank does and behaves by its first argument:
//
//   launcher_rank sleep DIR [stubborn]
//       writes its pid to DIR/pid-RANK, then sleeps for a minute; `stubborn` ignores SIGTERM and
//       SIGHUP first, so that only SIGKILL ends it (the orphan drill).
//   launcher_rank blame DIR TEARDOWN_MS
//       rank 1 fails: reports it (tpipe::report_rank_failure), tells its peers through DIR/down as
//       a closed connection would, takes TEARDOWN_MS to exit and exits 1. Rank 0 fails as soon as
//       it sees DIR/down, reporting too, and exits 2 at once. Other ranks sleep until stopped.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "tpipe/launcher.h"

namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

bool exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// Writes `text` to `path` whole: aside first, then renamed, so a reader never sees half of it.
void write_file(const std::string& path, const std::string& text) {
  const std::string aside = path + ".part";
  std::ofstream(aside) << text;
  std::rename(aside.c_str(), path.c_str());
}

int sleep_rank(const std::string& dir, int rank, bool stubborn) {
  if (stubborn) {
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
  }
  write_file(dir + "/pid-" + std::to_string(rank), std::to_string(getpid()) + "\n");
  for (int i = 0; i < 600; ++i) sleep_ms(100);
  return 0;
}

int blame_rank(const std::string& dir, int rank, int teardown_ms) {
  const std::string down = dir + "/down";
  if (rank == 1) {
    const std::string what = "rank 1: the batch does not fit";
    tpipe::report_rank_failure(what);
    std::cerr << "error: " << what << std::endl;
    write_file(down, "1\n");
    sleep_ms(teardown_ms);
    return 1;
  }
  if (rank == 0) {
    while (!exists(down)) sleep_ms(1);
    const std::string what = "rank 0: connection reset by rank 1";
    tpipe::report_rank_failure(what);
    std::cerr << "error: " << what << std::endl;
    return 2;
  }
  for (int i = 0; i < 600; ++i) sleep_ms(100);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* rank_text = std::getenv("RANK");
  const std::string mode = argc > 2 ? argv[1] : "";
  if (rank_text == nullptr || (mode != "sleep" && mode != "blame")) {
    std::cerr << "usage: RANK=k launcher_rank sleep DIR [stubborn] | blame DIR TEARDOWN_MS\n";
    return 64;
  }
  const int rank = std::atoi(rank_text);
  if (mode == "sleep") return sleep_rank(argv[2], rank, argc > 3 && std::string(argv[3]) == "stubborn");
  return blame_rank(argv[2], rank, argc > 3 ? std::atoi(argv[3]) : 0);
}
