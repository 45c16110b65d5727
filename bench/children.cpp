// Running benchmark children (see children.h).
#include "children.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "tpipe/machine/facts.h"

namespace bench {

std::optional<std::vector<nlohmann::json>> run_child(const std::string& cmd) {
  std::FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  if (out.find("BENCH-SKIP") != std::string::npos) return std::nullopt;
  std::vector<nlohmann::json> found;
  for (std::size_t at = out.find("BENCH {"); at != std::string::npos; at = out.find("BENCH {", at + 1))
    found.push_back(nlohmann::json::parse(out.substr(at + 6, out.find('\n', at) - at - 6)));
  if (status != 0 || found.empty()) throw std::runtime_error("`" + cmd + "` failed:\n" + out);
  // Processes that each report (the serial pair) say which they are; their lines come in any order.
  std::stable_sort(found.begin(), found.end(), [](const nlohmann::json& x, const nlohmann::json& y) {
    return x.value("process", 0) < y.value("process", 0);
  });
  return found;
}

std::string tune_children() {
  setenv("OMP_NUM_THREADS", "1", 0);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  const tpipe::RankTuning t = tpipe::tune_local_ranks(2);
  for (const auto& [name, value] : t.set) setenv(name.c_str(), value.c_str(), 0);
  return t.line;
}

int report_child(const std::function<nlohmann::json()>& work) {
  try {
    const nlohmann::json out = work();
    if (!out.contains("rank") || out["rank"] == 0) std::cout << "BENCH " << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

std::string self_path(const char* argv0) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  return n > 0 ? std::string(self, n) : argv0;
}

}  // namespace bench
