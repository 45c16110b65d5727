// The ranks of a training command and what rank 0 reports (see worker_ranks.h).
#include "worker_ranks.h"

#include <c10/util/Exception.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "progress.h"
#include "tpipe/checkpoint/inspect.h"
#include "tpipe/error.h"

namespace tpipe::cli {
namespace {

constexpr const char* kProgress = "[rank 0] PROGRESS ";
constexpr const char* kSummary = "[rank 0] SUMMARY ";
constexpr const char* kDoctor = "[rank 0] DOCTOR ";
constexpr const char* kNote = "[rank 0] NOTE ";

// LibTorch's errors carry C++ frames; users get the first line unless TPIPE_DEBUG=1.
std::string first_line(const std::string& text) {
  const char* debug = std::getenv("TPIPE_DEBUG");
  if (debug && std::string(debug) == "1") return text;
  return text.substr(0, text.find('\n'));
}

std::string after(const std::string& line, const char* prefix) { return line.substr(std::string(prefix).size()); }

}  // namespace

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }
nlohmann::json number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }
double number(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }

void report_progress(const nlohmann::json& progress) { std::cout << "PROGRESS " << dump(progress) << std::endl; }

void report_note(const std::string& text) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) std::cout << "NOTE " << line << std::endl;
}

void report_summary(const nlohmann::json& summary) { std::cout << "SUMMARY " << dump(summary) << std::endl; }

std::string machine_json(const DoctorReport& machine) {
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.0f GFLOP/s (%d^3, float32)", machine.gemm_gflops, machine.gemm_n);
  return nlohmann::json{{"GEMM of a rank", rate}}.dump();
}

int run_worker_rank(const std::string& command, double timeout_s,
                    const std::function<int(Communicator&, const DoctorReport&)>& body) {
  // Rank 0 says what a rank gets here (kernel, threads, GEMM rate) before training starts; the
  // rate is the peak a summary compares the achieved GFLOP/s with.
  const char* local_rank = std::getenv("LOCAL_RANK");
  DoctorReport machine;
  if (local_rank && std::string(local_rank) == "0") {
    machine = examine_machine();
    std::cout << "DOCTOR " << summary_line(machine) << std::endl;
  }
  CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
  auto comm = Communicator::from_env(co);
  try {
    try {
      return body(*comm, machine);
    } catch (const std::exception& e) {
      // While this rank's connections are still open, so that it reports before its peers
      // notice it is gone and report their own failures.
      report_rank_failure(e.what());
      throw;
    }
  } catch (const NonFiniteError& e) {
    // Every rank stops at the same step with the same message: rank 0 says it.
    // The launcher names the rank already: drop the engine's "[rank 0] ".
    std::string what = e.what();
    if (what.rfind('[', 0) == 0 && what.find("] ") != std::string::npos) what.erase(0, what.find("] ") + 2);
    if (comm->rank() == 0) std::cerr << command << ": " << what << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    throw Error(first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw Error(first_line(e.what()));
  }
}

int launch_worker_ranks(const std::string& command, const LaunchOptions& lo, nlohmann::json& summary) {
  ProgressBar bar(isatty(STDOUT_FILENO));
  const LaunchResult r = launch(lo, [&](const std::string& line, bool is_stderr) {
    if (line.rfind(kProgress, 0) == 0) {
      const auto j = nlohmann::json::parse(after(line, kProgress));
      ProgressState p{j["step"], j["steps"], number(j["loss"]), std::nullopt, j["rate"], j["unit"], j["elapsed"]};
      if (j.contains("val")) p.val_loss = number(j["val"]);
      bar.update(p);
    } else if (line.rfind(kDoctor, 0) == 0) {
      bar.done();
      std::cout << "machine: " << after(line, kDoctor) << std::endl;
    } else if (line.rfind(kNote, 0) == 0) {
      bar.done();
      std::cout << after(line, kNote) << std::endl;
    } else if (line.rfind(kSummary, 0) == 0) {
      summary = nlohmann::json::parse(after(line, kSummary));
    } else {
      bar.done();
      (is_stderr ? std::cerr : std::cout) << line << std::endl;
    }
  });
  bar.done();
  if (r.exit_code != 0) std::cerr << command << ": " << r.message << std::endl;
  if (r.exit_code == 0 && lo.node_rank != 0)
    std::cout << command << ": node " << lo.node_rank << "'s ranks " << lo.node_rank * lo.nproc << " to "
              << (lo.node_rank + 1) * lo.nproc - 1 << " finished; node 0 shows the summary" << std::endl;
  return r.exit_code;
}

// The measured peaks per rank: the largest, and every rank's when there are few.
int run_training_command(const std::string& command, const LaunchOptions& lo, const std::string& tuning_line,
                         const std::function<void(const nlohmann::json&)>& print_summary) {
  std::printf("ranks: %s\n", tuning_line.c_str());
  std::fflush(stdout);
  nlohmann::json summary;
  if (const int code = launch_worker_ranks(command, lo, summary); code != 0) return code;
  if (!summary.is_null()) print_summary(summary);
  return 0;
}

void add_node_flags(CLI::App& app, NodeFlags& f) {
  const char* group = "More than one machine";
  app.add_option("--nnodes", f.nnodes, "machines in the job; run the command on each, with its --node-rank")
      ->capture_default_str()->group(group);
  app.add_option("--node-rank", f.node_rank, "this machine's index in [0, nnodes)")->capture_default_str()->group(group);
  app.add_option("--nproc-per-node", f.nproc_per_node, "ranks on each machine (0: stages x dp / nnodes)")
      ->capture_default_str()->group(group);
  app.add_option("--master-addr", f.master_addr, "address of node 0, where rank 0 listens")
      ->capture_default_str()->group(group);
  app.add_option("--master-port", f.master_port, "port rank 0 listens on; 0 picks a free one (one machine only)")
      ->capture_default_str()->group(group);
}

LaunchOptions node_launch(const NodeFlags& f, int ranks, std::string& tuning_line) {
  LaunchOptions lo;
  lo.nnodes = f.nnodes;
  lo.node_rank = f.node_rank;
  lo.master_addr = f.master_addr;
  lo.master_port = f.master_port;
  if (f.nnodes < 1) throw ConfigError("--nnodes must be at least 1, got " + std::to_string(f.nnodes));
  lo.nproc = f.nproc_per_node > 0 ? f.nproc_per_node : ranks / f.nnodes;
  if (static_cast<long long>(lo.nproc) * f.nnodes != ranks)
    throw ConfigError("--stages x --dp = " + std::to_string(ranks) + " ranks do not fill --nnodes " +
                      std::to_string(f.nnodes) + " x --nproc-per-node " +
                      (f.nproc_per_node > 0 ? std::to_string(f.nproc_per_node) : std::string("(any)")) +
                      ": every machine runs the same number of ranks");
  if (f.nnodes > 1 && f.master_port == 0)
    throw ConfigError("--nnodes " + std::to_string(f.nnodes) + " needs --master-port: every machine must know where " +
                      "rank 0 listens");
  check_launch_size(lo.nproc, lo.nnodes, lo.node_rank, usable_cores());
  const RankTuning tuning = tune_local_ranks(lo.nproc);
  lo.env = tuning.set;
  lo.cpus = tuning.cpus;
  tuning_line = tuning.line;
  return lo;
}

std::unique_ptr<DirectoryLock> prepare_run_directories(const std::string& command,
                                                       const std::optional<std::string>& resume,
                                                       const std::string& out, const std::string& checkpoint_root) {
  if (resume) {
    const auto found = checkpoint::inspect_checkpoint(*resume);
    if (!found.problems.empty())
      throw ConfigError("checkpoint " + *resume + " is damaged: " + found.problems.front() +
                        " (`tpipe checkpoint info " + *resume + "` lists every file)");
  }
  for (const std::string& dir : {out, checkpoint_root}) {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) throw ConfigError("cannot create " + dir + ": " + ec.message());
  }
  return std::make_unique<DirectoryLock>(out, command);
}

void print_memory(const std::vector<std::int64_t>& activations, const std::vector<std::int64_t>& memory,
                  const std::string& checkpoint) {
  if (activations.empty() || memory.empty()) return;
  auto largest = [](const std::vector<std::int64_t>& v) {
    return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
  };
  const int a = largest(activations), m = largest(memory);
  // MiB, or KiB for a model too small to show in MiB; the ranks' figures in the largest's unit.
  auto unit_of = [](std::int64_t b) { return b < (1 << 20) ? std::pair{1024.0, "KiB"} : std::pair{1048576.0, "MiB"}; };
  const auto [per, unit] = unit_of(activations[a]);
  std::string each;
  if (activations.size() > 1 && activations.size() <= 8) {
    char buf[32];
    for (std::size_t r = 0; r < activations.size(); ++r) {
      std::snprintf(buf, sizeof buf, "%s%.1f", r ? ", " : "", static_cast<double>(activations[r]) / per);
      each += buf;
    }
    each = " (by rank: " + each + ")";
  }
  std::printf("activations       %.1f %s at most, rank %d%s; --checkpoint %s\n", activations[a] / per, unit, a,
              each.c_str(), checkpoint.c_str());
  const auto [mper, munit] = unit_of(memory[m]);
  std::printf("tensor memory     %.1f %s at most, rank %d (weights, gradients, optimizer state, activations)\n",
              memory[m] / mper, munit, m);
}

void print_run_end(const nlohmann::json& s, int steps, const std::string& checkpoint_mode, const RunFiles& files) {
  if (s["bubble"].get<double>() >= 0) std::printf("measured bubble   %.1f%%\n", 100 * s["bubble"].get<double>());
  print_memory(s["activation_peak_bytes"].get<std::vector<std::int64_t>>(),
               s["memory_peak_bytes"].get<std::vector<std::int64_t>>(), checkpoint_mode);
  auto file = [&](const std::string& chosen, const char* name) {
    return chosen == "-" ? std::string("(off)") : chosen.empty() ? files.out + "/" + name : chosen;
  };
  std::printf("report            %s/report.html (curves, measured and planned timelines, layout, machine)\n",
              files.out.c_str());
  std::printf("files             %s, %s, %s\n", file(files.trace, "trace.json").c_str(),
              file(files.timeline, "timeline.svg").c_str(), file(files.metrics, "metrics.jsonl").c_str());
  if (!s["checkpoint"].get<std::string>().empty())
    std::printf("checkpoint        %s\n", s["checkpoint"].get<std::string>().c_str());
  if (s.value("skipped", 0) > 0)
    std::printf("skipped steps     %d with a loss or gradient norm that was not finite (--on-nonfinite skip)\n",
                s["skipped"].get<int>());
  if (s["last_step"].get<int>() < steps)
    std::printf("stopped after step %d of %d (--stop-after); continue with --resume auto\n",
                s["last_step"].get<int>(), steps);
}

}  // namespace tpipe::cli
