// Failure reports: a failing rank writes when it failed, the launcher blames the earliest (see
// launcher.h).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>

#include "launch_parts.h"
#include "tpipe/comm/peer_loss.h"
#include "tpipe/launcher.h"

namespace tpipe {

std::string format_failure_report(const FailureReport& report) {
  return std::to_string(report.time_ns) + "\n" + report.what + "\n";
}

std::optional<FailureReport> parse_failure_report(const std::string& text) {
  const size_t nl = text.find('\n');
  if (nl == std::string::npos || nl == 0 || nl > 19) return std::nullopt;
  FailureReport report;
  for (size_t i = 0; i < nl; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    const int digit = text[i] - '0';
    if (report.time_ns > (INT64_MAX - digit) / 10) return std::nullopt;  // more than an int64 holds
    report.time_ns = report.time_ns * 10 + digit;
  }
  const size_t end = text.find('\n', nl + 1);
  if (end == std::string::npos) return std::nullopt;  // a report always ends with a newline
  report.what = text.substr(nl + 1, end - nl - 1);
  return report;
}

void report_rank_failure(const std::string& what) noexcept {
  static std::atomic<bool> reported{false};
  const char* path = std::getenv(kFailureFileVariable);
  if (path == nullptr || *path == '\0' || reported.exchange(true)) return;
  try {
    std::string line = what.substr(0, what.find('\n'));
    if (line.size() > 1000) line.resize(1000);
    const std::string text = format_failure_report({detail::monotonic_ns(), line});
    // Written aside, then linked into place: the launcher never reads half a report, and where a
    // report is already in place (another process of this rank), link() fails and the first stays.
    const std::string aside = std::string(path) + "." + std::to_string(getpid());
    const int fd = open(aside.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    close(fd);
    if (written && link(aside.c_str(), path) != 0) {}
    unlink(aside.c_str());
  } catch (...) {
    // Out of memory while failing: the launcher falls back to the order it reaped the ranks in.
  }
}

int first_failure(const std::vector<RankFailure>& failures) {
  int best = -1;
  std::int64_t best_ns = 0;
  for (size_t i = 0; i < failures.size(); ++i) {
    const std::int64_t t = failures[i].reported_ns.value_or(failures[i].reaped_ns);
    if (best < 0 || t < best_ns) {
      best = static_cast<int>(i);
      best_ns = t;
    }
  }
  return best;
}

std::string remote_node_note(const std::vector<std::string>& reasons, int nnodes, int nproc, int node_rank) {
  if (nnodes < 2 || nproc < 1) return "";
  for (const std::string& why : reasons) {
    const auto peer = lost_peer(why);
    if (!peer || *peer < 0 || *peer >= nnodes * nproc || *peer / nproc == node_rank) continue;
    const int node = *peer / nproc;
    return "; rank " + std::to_string(*peer) + " is on node " + std::to_string(node) + " (ranks " +
           std::to_string(node * nproc) + " to " + std::to_string(node * nproc + nproc - 1) +
           "): that node died, failed or cannot be reached";
  }
  return "";
}

}  // namespace tpipe
