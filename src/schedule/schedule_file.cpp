// Schedules read from text (see schedule_file.h).
#include "tpipe/schedule/schedule_file.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tpipe/error.h"

namespace tpipe {

Schedule schedule_from_text(const std::string& text, int ranks, int microbatches, const std::string& source) {
  Schedule s;
  s.name = source;
  s.num_microbatches = microbatches;
  std::set<int> seen_mb;
  std::map<int, std::pair<int, int>> placed;  // stage -> (rank, line) where it first appears
  std::istringstream lines(text);
  int line_no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    const std::string at = source + " line " + std::to_string(line_no) + ": ";
    if (const auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    if (const auto bar = line.find('|'); bar != std::string::npos) line.erase(0, bar + 1);
    std::istringstream tokens(line);
    std::string kept;
    for (std::string tok; tokens >> tok;) {
      while (!tok.empty() && tok.back() == '-') tok.pop_back();
      if (tok.empty() || tok == ".") continue;
      kept += tok + " ";
    }
    if (kept.empty()) continue;
    const int rank = s.num_ranks();
    if (rank >= ranks)
      throw ScheduleError(at + "a line for rank " + std::to_string(rank) + ", but there are " + std::to_string(ranks) +
                          " ranks (one line per rank)");
    std::vector<Action> actions;
    try {
      actions = parse_actions(kept);
    } catch (const ScheduleError& e) {
      throw ScheduleError(at + e.what());
    }
    for (const Action& a : actions) {
      if (!is_compute(a.op))
        throw ScheduleError(at + to_string(a) + ": a schedule file lists F, B and W only (sends, receives and the " +
                            "end of the step are added)");
      // The line a stage appears on places it: one rank per stage.
      const auto [it, fresh] = placed.emplace(a.stage, std::make_pair(rank, line_no));
      if (!fresh && it->second.first != rank)
        throw ScheduleError(at + to_string(a) + " puts stage " + std::to_string(a.stage) + " on rank " +
                            std::to_string(rank) + ", but line " + std::to_string(it->second.second) +
                            " already put it on rank " + std::to_string(it->second.first) +
                            " (a stage lives on one rank)");
      if (a.mb >= microbatches)
        throw ScheduleError(at + to_string(a) + " names micro-batch " + std::to_string(a.mb) + ", but there are " +
                            std::to_string(microbatches));
      seen_mb.insert(a.mb);
    }
    s.ranks.push_back(std::move(actions));
  }
  if (s.num_ranks() != ranks)
    throw ScheduleError(source + " has " + std::to_string(s.num_ranks()) + " ranks' lines, but there are " +
                        std::to_string(ranks) + " ranks");
  // Stages are numbered 0..highest with none left out.
  const int stages = placed.empty() ? 0 : placed.rbegin()->first + 1;
  for (int st = 0; st < stages; ++st)
    if (!placed.count(st)) {
      const auto& [top_rank, top_line] = placed.rbegin()->second;
      throw ScheduleError(source + " line " + std::to_string(top_line) + ": stage " + std::to_string(stages - 1) +
                          " (rank " + std::to_string(top_rank) + ") makes " + std::to_string(stages) +
                          " stages, but stage " + std::to_string(st) + " is on no rank's line");
    }
  s.stage_rank.resize(stages);
  for (const auto& [st, where] : placed) s.stage_rank[st] = where.first;
  if (static_cast<int>(seen_mb.size()) != microbatches)
    throw ScheduleError(source + " uses " + std::to_string(seen_mb.size()) + " micro-batches, but there are " +
                        std::to_string(microbatches));
  return s;
}

Schedule schedule_from_file(const std::string& path, int ranks, int microbatches) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read the schedule file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return schedule_from_text(text.str(), ranks, microbatches, path);
}

}  // namespace tpipe
