// Small statistics shared by the measuring code (profile, calibration, tpipe plan).
#pragma once

#include <algorithm>
#include <vector>

namespace tpipe {

// The upper median (the middle element after sorting; of an even count, the higher of the two
// in the middle); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace tpipe
