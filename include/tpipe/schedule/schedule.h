// A whole pipeline schedule: for each rank, the ordered list of actions it executes in one
// training step. Stages are placed on ranks by `stage_rank` (one stage per rank for GPipe and
// 1F1B; several for interleaved schedules). Immutable value type; generators build it, passes
// transform it, the validator and simulator read it.
#pragma once

#include <string>
#include <vector>

#include "tpipe/schedule/action.h"

namespace tpipe {

struct Schedule {
  std::string name;                         // "gpipe", "1f1b", ...
  int num_microbatches = 0;
  bool forward_only = false;                // evaluation: forwards and their messages, no backward
  std::vector<int> stage_rank;              // stage -> rank (pipeline position)
  std::vector<std::vector<Action>> ranks;   // rank -> actions in execution order
  // Groups of stages that hold copies of one tied weight: their REDUCE_TIED is one collective,
  // so a STEP waits until every stage of its groups has started it.
  std::vector<std::vector<int>> tied_stages;

  int num_stages() const { return static_cast<int>(stage_rank.size()); }
  int num_ranks() const { return static_cast<int>(ranks.size()); }
  int rank_of(int stage) const { return stage_rank.at(stage); }
  // The stages a rank holds, ascending: {r} with one stage per rank, {r, r+p, ...} interleaved,
  // {r, 2p-1-r} in ZB-V's V.
  std::vector<int> stages_of(int rank) const;
  // Position of a stage among its rank's stages (0 for the rank's lowest): the model "chunk".
  int chunk_of(int stage) const;

  // Only the F/B/W actions of one rank, in order.
  std::vector<Action> compute_actions(int rank) const;
};

// "0F0 0F1 0B0 0B1" — the actions of one rank separated by spaces.
std::string to_string(const std::vector<Action>& actions);

// Parses the form above (whitespace separated). Throws ScheduleError on a bad token.
std::vector<Action> parse_actions(const std::string& text);

}  // namespace tpipe
