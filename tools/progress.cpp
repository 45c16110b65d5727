// Progress bar of `tpipe train` (see progress.h).
#include "progress.h"

#include <cstdio>

namespace tpipe::cli {

std::string render_progress(const ProgressState& p, int width) {
  const double frac = p.steps > 0 ? static_cast<double>(p.step) / p.steps : 0.0;
  const int filled = static_cast<int>(frac * width + 1e-9);
  const double eta = p.step > 0 ? p.elapsed_s / p.step * (p.steps - p.step) : 0.0;
  char buf[256];
  std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  std::string val = p.val_loss ? "  val " + std::to_string(*p.val_loss).substr(0, 5) : "";
  char rate[48];
  if (p.per_second >= 1000)
    std::snprintf(rate, sizeof rate, "%.1fk %s/s", p.per_second / 1000, p.unit.c_str());
  else
    std::snprintf(rate, sizeof rate, "%.0f %s/s", p.per_second, p.unit.c_str());
  std::snprintf(buf, sizeof buf, "step %4d/%d [%s] %3.0f%%  loss %.3f%s  %s  ETA %d:%02d", p.step, p.steps, bar.c_str(),
                100 * frac, p.loss, val.c_str(), rate, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  return buf;
}

void ProgressBar::update(const ProgressState& p) {
  if (terminal_) {
    std::printf("\r%s\033[K", render_progress(p).c_str());
    drawn_ = true;
  } else {
    const int tenth = p.steps > 0 ? p.step * 10 / p.steps : 10;
    if (tenth == last_tenth_ && p.step != 1 && !p.val_loss) return;
    last_tenth_ = tenth;
    std::printf("%s\n", render_progress(p).c_str());
  }
  std::fflush(stdout);
}

void ProgressBar::done() {
  if (terminal_ && drawn_) std::printf("\n");
  drawn_ = false;
  std::fflush(stdout);
}

}  // namespace tpipe::cli
