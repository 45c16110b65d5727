// Running layouts for tpipe plan (see plan_trials.h).
#include "plan_trials.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <unistd.h>

#include "model_flags.h"
#include "tpipe/error.h"
#include "tpipe/util/stats.h"

namespace tpipe::cli {
namespace {

// `arg` as one word for the shell.
std::string quoted(const std::string& arg) {
  std::string q = "'";
  for (char ch : arg) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

// The model and training flags of `c`: the layout's flags carry the micro-batch size.
std::string model_words(const TrainConfig& c) {
  std::ostringstream words;
  const auto args = model_args(c);
  for (std::size_t i = 0; i + 1 < args.size(); i += 2)
    if (args[i] != "--microbatch-size") words << ' ' << args[i] << ' ' << quoted(args[i + 1]);
  words << " --optimizer " << quoted(c.optimizer) << " --clip " << std::setprecision(17) << c.clip;
  return words.str();
}

// Runs `flags` with tpipe train for kWarmupSteps + `steps` steps in `dir`; the times of the last
// `steps`.
std::vector<double> step_times(const TrainConfig& c, const std::string& flags, int steps, const std::string& dir) {
  const std::string total = std::to_string(kWarmupSteps + steps);
  std::filesystem::remove_all(dir);
  // The shell runs the command: name this program by its path, not /proc/self/exe.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = quoted(self) + " train " + flags + model_words(c) + " --steps " + total +
                          " --eval-every " + total + " --sample-chars 0 --checkpoints - --trace - --timeline - --out " +
                          quoted(dir) + " >" + quoted(dir + ".log") + " 2>&1";
  std::filesystem::create_directories(dir);
  if (std::system(cmd.c_str()) != 0) throw Error("tpipe train " + flags + " failed; see " + dir + ".log");
  std::vector<double> times;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["step"].get<int>() > kWarmupSteps) times.push_back(j["step_time_s"].get<double>());
  }
  if (times.empty()) throw Error("tpipe train " + flags + " wrote no step times in " + dir);
  return times;
}

}  // namespace

std::vector<double> run_alternating(const TrainConfig& model, const std::vector<std::string>& flags, int rounds,
                                    int steps) {
  const auto dir = std::filesystem::temp_directory_path() / ("tpipe-plan-" + std::to_string(getpid()));
  std::vector<std::vector<double>> times(flags.size());
  for (int r = 0; r < rounds; ++r)
    for (std::size_t i = 0; i < flags.size(); ++i) {
      const auto t = step_times(model, flags[i], steps, (dir / std::to_string(i)).string());
      times[i].insert(times[i].end(), t.begin(), t.end());
    }
  std::filesystem::remove_all(dir);
  std::vector<double> out;
  for (const auto& t : times) out.push_back(median(t));
  return out;
}

std::size_t race_field(const std::vector<Layout>& ranked, int entrants, double margin) {
  std::size_t n = 0;
  while (n < ranked.size() && static_cast<int>(n) < entrants && ranked[n].fits &&
         ranked[n].step_s <= (1 + margin) * ranked.front().step_s)
    ++n;
  return n;
}

std::vector<double> race(const TrainConfig& model, std::vector<Layout>& ranked, std::size_t n, int rounds,
                         int steps) {
  if (n < 2) return {};
  std::vector<std::string> flags;
  for (std::size_t i = 0; i < n; ++i) flags.push_back(ranked[i].flags());
  std::vector<double> measured = run_alternating(model, flags, rounds, steps);
  const auto fastest = std::min_element(measured.begin(), measured.end()) - measured.begin();
  std::rotate(ranked.begin(), ranked.begin() + fastest, ranked.begin() + fastest + 1);
  std::rotate(measured.begin(), measured.begin() + fastest, measured.begin() + fastest + 1);
  return measured;
}

}  // namespace tpipe::cli
