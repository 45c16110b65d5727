// The ranks of a training command and what rank 0 reports (see worker_ranks.h).
#include "worker_ranks.h"

#include <c10/util/Exception.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "progress.h"
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
      ProgressState p{j["step"], j["steps"], number(j["loss"]), std::nullopt, j["tok_s"], j["elapsed"]};
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
  return r.exit_code;
}

}  // namespace tpipe::cli
