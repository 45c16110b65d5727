// `make bench`: tpipe against the bound and against its peers on the reference workload W1
// (w1.h), measured as ratios within one run.
//
// Two processes on a 2-core VM slow each other down (shared vector units and memory), and the
// machine drifts by +-20 % (at times far more) from minute to minute. So the orchestrator (no
// --mode) runs every configuration once per round, each round starting one configuration later,
// for several rounds; a ratio is the median over rounds of the two times measured in that round
// (a drift between rounds cancels), a time the median over rounds:
//   - one process: the whole batch; the m micro-batches serially, alone and as a concurrent pair
//     (the same serial work in two processes at once), which gives the concurrent GPipe bound;
//   - tpipe gpipe, 1f1b, zb-h1, interleaved-1f1b (2 stages per rank) and zb-v over 2 processes
//     (`tpipe run -n 2`);
//   - peers (bench/peers.py, Debian's python3-torch; skipped with a message without it): PyTorch
//     one process and serial, torch.distributed.pipeline.sync.Pipe, and a GPipe loop over
//     torch.distributed Gloo send/recv in 2 processes;
// then, once, data parallelism and pp x dp. Every child gets the BLAS kernel and one thread per
// rank as `tpipe run` chooses them (tpipe/machine/tuning.h), printed first.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "tpipe/machine/facts.h"
#include "children.h"
#include "workers.h"

#ifndef TPIPE_PEERS_PY
#define TPIPE_PEERS_PY "bench/peers.py"
#endif

namespace bench {
namespace {

struct Config {
  std::string label, cmd;
  int ranks = 1;             // processes doing the work (GFLOP/s are per rank)
  bool pipeline_peer = false;  // a peer that pipelines over 2 workers: "best peer" is the fastest
  std::vector<double> step_s;            // one per round: the mean over reporting ranks (NaN: failed)
  std::vector<nlohmann::json> reports;   // rank 0's report of each round
  std::vector<std::vector<nlohmann::json>> by_rank;  // every rank's report of each round
  bool skipped = false;
};

double median_finite(const std::vector<double>& v) {
  std::vector<double> ok;
  for (double x : v)
    if (std::isfinite(x)) ok.push_back(x);
  return median(ok);
}

double med(const Config& c) { return median_finite(c.step_s); }

// The median over rounds of a / b, each pair measured in the same round (NaN where either is).
double paired(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) r.push_back(a[i] / b[i]);
  return median_finite(r);
}

// A per-round series from one configuration's reports: f(rank's report) or NaN.
template <class F>
std::vector<double> per_round(const Config& c, int rank, F f) {
  std::vector<double> v;
  for (const auto& round : c.by_rank)
    v.push_back(static_cast<int>(round.size()) > rank ? f(round[rank]) : std::nan(""));
  return v;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f s", s);
  return buf;
}

// The median over rounds of a number in rank 0's reports.
double report_median(const Config& c, const std::string& key) {
  std::vector<double> v;
  for (const auto& r : c.reports)
    if (r.contains(key)) v.push_back(r[key].get<double>());
  return median(v);
}

// The transport a pipelined configuration's messages went through, as its first report says.
std::string transport(const Config& c) {
  for (const auto& r : c.reports)
    if (r.is_object() && r.contains("transport")) return r["transport"].get<std::string>();
  return "?";
}

// Each round's compute time of an action in one rank's report (rank 0's hold every rank's
// actions when pipelined; each process of the serial pair reports its own).
std::vector<double> op_rounds(const Config& c, const std::string& op, int rank = 0) {
  return per_round(c, rank, [&](const nlohmann::json& r) {
    return r.contains("compute_ms") && r["compute_ms"].contains(op) ? r["compute_ms"][op].get<double>() : std::nan("");
  });
}

// The median over rounds of one rank's step time.
double rank_median(const Config& c, int rank) {
  return median_finite(per_round(c, rank, [](const nlohmann::json& r) { return r["step_s"].get<double>(); }));
}

int orchestrate(const Workload& w, const std::string& self, const std::string& tpipe_cmd, const std::string& python,
                const std::string& peers, int rounds) {
  const std::string choice = tune_children();
  const std::string common = " --steps " + std::to_string(w.steps) + " --batch " + std::to_string(w.batch);
  const std::string run2 = tpipe_cmd + " run -n 2 -- ";
  const auto doctor = run_child(self + " --mode doctor")->front();
  const bool have_torch = std::system((python + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;

  std::vector<Config> cs = {
      {"single process, whole batch", self + " --mode single" + common},
      {"single process, 8 micro-batches serial", self + " --mode serial" + common},
      {"  the same, two processes at once", run2 + self + " --mode serial" + common},
      {"tpipe gpipe, pp=2", run2 + self + " --mode pipe --schedule gpipe" + common, 2},
      {"tpipe 1f1b, pp=2", run2 + self + " --mode pipe --schedule 1f1b" + common, 2},
      {"tpipe zb-h1, pp=2", run2 + self + " --mode pipe --schedule zb-h1" + common, 2},
      {"tpipe interleaved-1f1b, pp=2 x 2 chunks", run2 + self + " --mode pipe --schedule interleaved-1f1b" + common, 2},
      {"tpipe zb-v, pp=2 x 2 chunks", run2 + self + " --mode pipe --schedule zb-v" + common, 2},
      {"tpipe 1f1b over Gloo's sockets, pp=2",
       "env TPIPE_TRANSPORT=gloo " + run2 + self + " --mode pipe --schedule 1f1b" + common, 2},
  };
  const std::size_t first_tpipe = 3, tpipe_rows = 6;
  const std::string py = python + " " + peers + " --steps " + std::to_string(w.steps) + " --batch " +
                         std::to_string(w.batch);
  if (have_torch) {
    cs.push_back({"peer: PyTorch, one process, whole batch", py + " --mode single"});
    cs.push_back({"peer: PyTorch, serial micro-batches", py + " --mode serial"});
    cs.push_back({"peer: PyTorch Pipe (sync.Pipe), 2 partitions", py + " --mode pipe", 1, true});
    cs.push_back({"peer: PyTorch GPipe, Gloo send/recv, 2 procs", run2 + py + " --mode gpipe", 2, true});
  }
  std::printf("W1: %d x [Linear(%d,%d)+ReLU], batch %d, m = %d, p = 2, one thread per rank; median of %d rounds, "
              "each the median of %d steps\n",
              w.layers, w.width, w.width, w.batch, w.microbatches, rounds, w.steps);
  std::printf("ranks: %s\nmachine (one rank): %s\n", choice.c_str(), doctor["line"].get<std::string>().c_str());
  if (!have_torch)
    std::printf("peers skipped: %s cannot import torch (install Debian's python3-torch)\n", python.c_str());
  std::fflush(stdout);
  for (int r = 0; r < rounds; ++r) {
    std::fprintf(stderr, "round %d/%d\n", r + 1, rounds);
    for (std::size_t k = 0; k < cs.size(); ++k) {
      auto& c = cs[(k + static_cast<std::size_t>(r)) % cs.size()];
      c.step_s.resize(static_cast<std::size_t>(r), std::nan(""));  // rounds this one failed in
      c.reports.resize(static_cast<std::size_t>(r));
      c.by_rank.resize(static_cast<std::size_t>(r));
      const auto got = run_child(c.cmd);
      if (!got) continue;
      double sum = 0;
      for (const auto& j : *got) sum += j["step_s"].get<double>();
      c.step_s.push_back(sum / static_cast<double>(got->size()));
      c.reports.push_back(got->front());
      c.by_rank.push_back(*got);
    }
  }
  for (auto& c : cs) {
    c.step_s.resize(static_cast<std::size_t>(rounds), std::nan(""));
    c.skipped = !(med(c) > 0);
  }
  // Once: data parallelism, and pp x dp on 4 ranks (oversubscribed on 2 cores).
  // W1 gives each rank one thread; one process may instead thread over every core, as `tpipe run`
  // sets it up for a single rank (the variables this orchestrator set for its children unset).
  const std::string all_cores = "env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS " + tpipe_cmd + " run -n 1 -- ";
  std::vector<Config> once = {{"single process, whole batch, threads on all " +
                                   std::to_string(std::thread::hardware_concurrency()) + " cores, one round",
                               all_cores + self + " --mode single" + common},
                              {"tpipe dp=2 (pp=1), one round", run2 + self + " --mode pipe --dp 2" + common, 2},
                              {"tpipe 1f1b pp=2 x dp=2 (4 ranks), one round",
                               tpipe_cmd + " run -n 4 -- " + self + " --mode pipe --schedule 1f1b --dp 2" + common, 4}};
  for (auto& c : once) {
    const auto got = run_child(c.cmd);
    c.step_s.push_back(got->front()["step_s"].get<double>());
    c.reports.push_back(got->front());
  }

  const int m = w.microbatches, p = 2;
  const double stretch = static_cast<double>(m + p - 1) / m / p;
  const double bound = med(cs[1]) * stretch, conc_bound = med(cs[2]) * stretch;
  // Per round: the two bounds and the best pipelining peer (the fastest in that round).
  std::vector<double> bound_r, conc_r, peer_r;
  for (int r = 0; r < rounds; ++r) {
    bound_r.push_back(cs[1].step_s[r] * stretch);
    conc_r.push_back(cs[2].step_s[r] * stretch);
    double best = std::nan("");
    for (const auto& c : cs)
      if (c.pipeline_peer && std::isfinite(c.step_s[r])) best = std::isfinite(best) ? std::min(best, c.step_s[r]) : c.step_s[r];
    peer_r.push_back(best);
  }
  const bool have_peer = median_finite(peer_r) > 0;
  const double peak = doctor["gemm_gflops"].get<double>();

  std::printf("\n%-46s %9s  %6s  %6s  %6s  %6s  %s\n", "configuration", "step", "spread", "bound/", "conc./",
              "peer/", "GFLOP/s per rank");
  std::printf("%-46s %9s  %6s  %6s  %6s  %6s\n", "", "", "", "time", "time", "time");
  // A row measured every round gets paired ratios; one measured once is compared with the medians.
  auto row = [&](const Config& c) {
    if (c.skipped) return void(std::printf("%-46s   skipped\n", c.label.c_str()));
    const double t = med(c);
    double lo = t, hi = t;
    for (double v : c.step_s)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    const bool every_round = static_cast<int>(c.step_s.size()) == rounds;
    auto ratio = [&](const std::vector<double>& per_round_bound, double median_bound) {
      return every_round ? paired(per_round_bound, c.step_s) : median_bound / t;
    };
    const double gflops = w.flops_per_step() / t / 1e9 / c.ranks;
    std::printf("%-46s %7.3f s  %5.0f%%  %6.2f  %6.2f  ", c.label.c_str(), t, 100 * (hi - lo) / t,
                ratio(bound_r, bound), ratio(conc_r, conc_bound));
    if (have_peer) std::printf("%6.2f  ", ratio(peer_r, median_finite(peer_r))); else std::printf("%6s  ", "-");
    std::printf("%5.1f (%.0f%% of peak)\n", gflops, 100 * gflops / peak);
  };
  for (int i = 0; i < 3; ++i) row(cs[i]);
  std::printf("%-46s %7.3f s\n", "GPipe bound: serial / 2 x (m+p-1)/m", bound);
  std::printf("%-46s %7.3f s\n", "concurrent GPipe bound: pair / 2 x (m+p-1)/m", conc_bound);
  for (std::size_t i = 3; i < cs.size(); ++i) row(cs[i]);
  for (const auto& c : once) row(c);
  std::printf("(bound/time and conc./time: 1.00 = at the bound; peer/time: the best 2-process peer's step time over "
              "this one's; each the median over rounds of the two measured in that round; spread: (max-min)/median "
              "over rounds; peak: %.0f GFLOP/s, one rank's 1024^3 GEMM, %s kernel)\n\n",
              peak, doctor["kernel"].get<std::string>().c_str());

  for (std::size_t i = first_tpipe; i < first_tpipe + tpipe_rows; ++i) {
    std::printf("%s: %.0f messages a step through %s; bubble measured %.1f%%, simulated from the same step's action costs and a "
                "message latency of %.2f ms: %.1f%%; the actions of all ranks span %.0f ms of the step's %.0f ms; "
                "recording costs %.2f%% of a step\n",
                cs[i].label.c_str(), report_median(cs[i], "messages"),
                transport(cs[i]).c_str(),
                100 * report_median(cs[i], "bubble_measured"),
                report_median(cs[i], "comm_ms"),
                100 * report_median(cs[i], "bubble_predicted"), report_median(cs[i], "traced_ms"),
                report_median(cs[i], "step_ms"), 100 * report_median(cs[i], "record_cost"));
  }
  // Cores of one VM need not be equally fast: each stage's actions are compared with the pair's
  // process on the core that stage's rank is bound to (rank s runs stage s with gpipe and 1f1b).
  std::printf("\nthe serial pair by core: rank 0 %.3f s, rank 1 %.3f s (each rank bound to a core of its own)\n",
              rank_median(cs[2], 0), rank_median(cs[2], 1));
  std::printf("compute per action (ms, medians)  serial alone  serial pair  tpipe gpipe  tpipe 1f1b  1f1b / pair\n");
  std::printf("  %-32s %12s %12s %36s\n", "", "", "same core", "(per round)");
  for (const char* op : {"0F", "1F", "1B", "0B"}) {
    const int rank = op[0] - '0';
    const auto in_pair = op_rounds(cs[2], op, rank), f = op_rounds(cs[4], op);
    std::printf("  %-32s %12.2f %12.2f %12.2f %11.2f %11.2f\n", op, median_finite(op_rounds(cs[1], op)),
                median_finite(in_pair), median_finite(op_rounds(cs[3], op)), median_finite(f), paired(f, in_pair));
  }
  std::printf("\npeak activations held by rank 0 (stash and sends):");
  for (std::size_t i = first_tpipe; i < first_tpipe + tpipe_rows; ++i)
    std::printf("  %s %.1f MiB", cs[i].label.substr(6, cs[i].label.find(',') - 6).c_str(),
                report_median(cs[i], "peak_bytes") / (1 << 20));
  std::printf("\n");
  std::printf("all-reduce share of the step: dp=2 %.1f%%, pp=2 x dp=2 %.1f%% (%u cores: 4 ranks oversubscribe them)\n",
              100 * report_median(once[1], "reduce_s") / med(once[1]),
              100 * report_median(once[2], "reduce_s") / med(once[2]), std::thread::hardware_concurrency());
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  CLI::App app{"tpipe benchmark: W1 pipelined against the GPipe bound and PyTorch peers"};
  std::string mode, timeline, schedule = "gpipe", tpipe_cmd = "tpipe", python = "/usr/bin/python3", peers = TPIPE_PEERS_PY;
  int dp = 1, rounds = 5;
  bench::Workload w;
  app.add_option("--mode", mode, "worker mode: single | serial | pipe | doctor (empty: everything, as a table)");
  app.add_option("--schedule", schedule, "pipe mode: any schedule tpipe knows");
  app.add_option("--dp", dp, "pipe mode: data-parallel replicas");
  app.add_option("--timeline", timeline, "pipe mode: draw the last recorded step here (SVG; its Chrome trace beside it, .trace.json)");
  app.add_option("--tpipe", tpipe_cmd, "path of the tpipe command (for `tpipe run`)");
  app.add_option("--python", python, "Python with torch for the peers")->capture_default_str();
  app.add_option("--peers", peers, "the peers script")->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of all configurations (medians are reported)")->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--steps", w.steps, "timed steps per configuration and round")->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--batch", w.batch, "mini-batch size")->capture_default_str()->check(CLI::Range(8, 1 << 20));
  CLI11_PARSE(app, argc, argv);
  if (mode.empty()) {
    try {
      return bench::orchestrate(w, bench::self_path(argv[0]), tpipe_cmd, python, peers, rounds);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  return bench::report_child([&] {
    if (mode == "single") return bench::run_single(w);
    if (mode == "serial") return bench::run_serial(w);
    if (mode == "pipe") return bench::run_pipe(w, schedule, dp, timeline);
    if (mode == "doctor") return bench::run_doctor();
    throw std::runtime_error("unknown --mode " + mode);
  });
}
