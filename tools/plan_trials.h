// Running layouts of tpipe train's GPT for real, for tpipe plan: a race among the layouts its model
// cannot tell apart, and --measure's comparison of the chosen layout with the default. Both run
// their layouts in alternating rounds: this machine's speed drifts by up to 40 % within minutes,
// and one layout run after the other made a drift look like a difference between them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tpipe/plan.h"
#include "tpipe/train/train_config.h"

namespace tpipe::cli {

// Steps each run takes before the timed ones. A layout is predicted as it trains for hundreds of
// steps, and the first steps of a run are slower: on 4 ranks sharing 2 cores the second step took
// 1.3-2x the later ones and the third and fourth up to 1.3x, which put the median of steps 2-8
// 6-10 % above that of steps 5-30.
constexpr int kWarmupSteps = 3;

// Runs each layout (tpipe train flags) for `steps` timed steps, after kWarmupSteps, in each of
// `rounds` alternating rounds, in a temporary directory of this process's own; per layout, the
// median of its timed steps over all rounds.
std::vector<double> run_alternating(const TrainConfig& model, const std::vector<std::string>& flags, int rounds,
                                    int steps);

// How many of `ranked`'s first layouts race: at most `entrants`, each fitting and predicted within
// `margin` (0.1: 10 %) of the first.
std::size_t race_field(const std::vector<Layout>& ranked, int entrants, double margin);

// The race: the first `n` layouts of `ranked` (best first; race_field says how many), run with
// run_alternating. The measured fastest is moved to the front of `ranked`. Returns each entrant's
// measured seconds in `ranked`'s new order (empty when n < 2: nothing is run).
std::vector<double> race(const TrainConfig& model, std::vector<Layout>& ranked, std::size_t n, int rounds,
                         int steps);

}  // namespace tpipe::cli
