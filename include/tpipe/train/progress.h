// What a trainer tells its caller after each step (rank 0), for a progress bar.
#pragma once

#include <optional>
#include <string>

namespace tpipe {

struct TrainProgress {
  int step = 0;
  int steps = 0;
  double loss = 0;
  std::optional<double> val_loss;
  double per_second = 0;     // this step's throughput, in `unit`
  std::string unit = "tok";  // what per_second counts: "tok" (tokens) or "rows" (samples)
  double elapsed_s = 0;      // training time so far
};

}  // namespace tpipe
