// Schedules from a text file, so a new schedule can be tried without writing C++: one line per
// rank (rank 0 first) of its compute actions in order; the sends, receives and end of step are
// added as for the built-in schedules, then it is validated (deadlock grid, a B without its W).
//
//   # zb-h1 by hand, 2 stages, 2 micro-batches
//   0F0 0F1 0B0 0W0 0B1 0W1
//   1F0 1B0 1F1 1B1 1W0 1W1
//
// The grid that `tpipe simulate` prints can be pasted as it is: a leading "rank r |", the idle
// dots and the dashes of long boxes are ignored.
#pragma once

#include <string>

#include "tpipe/schedule/schedule.h"

namespace tpipe {

// Throws ScheduleError naming `source` and the line: a bad action, a line for a rank that does
// not exist, an action of another stage on a rank, a number of ranks or micro-batches other than
// `stages` and `microbatches`. The result has compute actions only (like the generators').
Schedule schedule_from_text(const std::string& text, int stages, int microbatches, const std::string& source);

// Reads the file; throws ConfigError when it cannot be read.
Schedule schedule_from_file(const std::string& path, int stages, int microbatches);

}  // namespace tpipe
