// Text pictures of schedules: the per-rank action lists with some actions marked (for errors),
// and a time-scaled chart of a simulation (for `tpipe simulate`).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tpipe/schedule/schedule.h"
#include "tpipe/schedule/simulator.h"

namespace tpipe {

// One line per rank: "rank 1 | 1RECV_F0 1F0 >1B0< ..." — marked actions, given as
// (rank, index in that rank's list), are wrapped in > <.
std::string render_grid(const Schedule& s, const std::vector<std::pair<int, int>>& marks = {});

// One line per rank, one column per `unit` of simulated time, compute actions drawn where they
// run ("0F1 " spans its cost) and idle time as dots. Empty if the chart would be wider than
// max_columns.
std::string render_chart(const SimResult& r, double unit, int max_columns = 240);

}  // namespace tpipe
