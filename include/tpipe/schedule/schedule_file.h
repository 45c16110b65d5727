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

// Several stages per rank (interleaved, ZB-V) are written the same way: a stage lives on the rank
// whose line lists it, and the number of stages is the highest stage listed plus one.
//
//   # interleaved by hand: 2 ranks, stages 0 and 2 on rank 0, 1 and 3 on rank 1, 1 micro-batch
//   0F0 2F0 2B0 0B0
//   1F0 3F0 3B0 1B0
//
// Throws ScheduleError naming `source` and the line: a bad action, a line for a rank that does
// not exist, a stage listed on two ranks' lines, a stage number that leaves a gap (no rank lists
// a lower stage), a number of lines other than `ranks`, a number of micro-batches other than
// `microbatches`. The result has compute actions only (like the generators').
Schedule schedule_from_text(const std::string& text, int ranks, int microbatches, const std::string& source);

// Reads the file; throws ConfigError when it cannot be read.
Schedule schedule_from_file(const std::string& path, int ranks, int microbatches);

}  // namespace tpipe
