// The progress bar of `tpipe train`: one line, redrawn in place on a terminal, printed every tenth
// of the run otherwise (logs stay short).
#pragma once

#include <optional>
#include <string>

namespace tpipe::cli {

struct ProgressState {
  int step = 0;
  int steps = 0;
  double loss = 0;
  std::optional<double> val_loss;
  double per_second = 0;
  std::string unit = "tok";  // "tok" or "rows"
  double elapsed_s = 0;
};

// "step  120/250 [###########.........]  48%  loss 2.314  val 2.402  5.1k tok/s  ETA 1:23"
std::string render_progress(const ProgressState& p, int width = 24);

class ProgressBar {
 public:
  explicit ProgressBar(bool terminal) : terminal_(terminal) {}
  void update(const ProgressState& p);
  void done();

 private:
  bool terminal_;
  bool drawn_ = false;
  int last_tenth_ = -1;
};

}  // namespace tpipe::cli
