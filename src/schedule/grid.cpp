// Text rendering of schedules and simulations (see grid.h).
#include "tpipe/schedule/grid.h"

#include <algorithm>
#include <cmath>

namespace tpipe {

std::string render_grid(const Schedule& s, const std::vector<std::pair<int, int>>& marks) {
  std::string out;
  for (int r = 0; r < s.num_ranks(); ++r) {
    out += "rank " + std::to_string(r) + " |";
    const auto& list = s.ranks[r];
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const bool marked = std::find(marks.begin(), marks.end(), std::make_pair(r, i)) != marks.end();
      out += marked ? " >" + to_string(list[i]) + "<" : " " + to_string(list[i]);
    }
    out += "\n";
  }
  return out;
}

std::string render_chart(const SimResult& r, double unit, int max_columns) {
  if (unit <= 0) return {};
  const int columns = static_cast<int>(std::ceil(r.makespan / unit - 1e-9));
  if (columns > max_columns) return {};
  std::size_t width = 1;  // widest compute label, plus one space
  for (const auto& row : r.timeline)
    for (const auto& t : row)
      if (is_compute(t.action.op)) width = std::max(width, to_string(t.action).size() + 1);
  std::string out;
  for (std::size_t rank = 0; rank < r.timeline.size(); ++rank) {
    std::string line(columns * width, ' ');
    for (int c = 0; c < columns; ++c) line[c * width + (width - 1) / 2] = '.';
    for (const auto& t : r.timeline[rank]) {
      if (!is_compute(t.action.op) || t.end <= t.start) continue;
      const int c0 = static_cast<int>(std::lround(t.start / unit));
      const int c1 = std::max(c0 + 1, static_cast<int>(std::lround(t.end / unit)));
      std::string cell = to_string(t.action);
      std::string span((c1 - c0) * width, ' ');
      span.replace(0, cell.size(), cell);
      for (std::size_t k = cell.size(); k + 1 < span.size(); ++k) span[k] = '-';
      line.replace(c0 * width, span.size(), span);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += "rank " + std::to_string(rank) + " | " + line + "\n";
  }
  return out;
}

}  // namespace tpipe
