// The configuration of `tpipe train`: strict reading from JSON and every check that needs no rank
// (see train_config.h).
#include "tpipe/train/train_config.h"

#include <unistd.h>

#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "tpipe/error.h"
#include "tpipe/models/gpt.h"
#include "tpipe/partition.h"
#include "tpipe/schedule/generators.h"
#include "tpipe/train/gpt_trainer.h"

namespace tpipe {
namespace {

// Every key, once: the JSON form, the reading and the writing all follow this list.
#define TPIPE_TRAIN_FIELDS(X)                                                                                     \
  X(stages) X(dp) X(microbatches) X(microbatch_size) X(schedule) X(virtual_stages) X(partition) X(layers) X(dim)  \
  X(heads) X(seq_len) X(steps) X(lr) X(optimizer) X(clip) X(seed) X(data) X(out) X(trace) X(timeline) X(metrics)  \
  X(eval_every) X(eval_batches) X(sample_chars) X(checkpoints) X(save_every) X(keep) X(resume) X(stop_after)      \
  X(on_nonfinite) X(timeout) X(checkpoint) X(dropout) X(plan)

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

[[noreturn]] void wrong_type(const std::string& key, const char* expected, const nlohmann::json& got) {
  throw ConfigError("config key '" + key + "' must be " + expected + ", got " + got.dump());
}

// Booleans are not numbers here ("steps": true is a mistake, not 1), and numbers are not rounded.
void take(const std::string& key, const nlohmann::json& j, int& into) {
  if (!j.is_number_integer()) wrong_type(key, "an integer", j);
  const auto v = j.get<std::int64_t>();
  if (j.is_number_unsigned() ? j.get<std::uint64_t>() > INT_MAX : v < INT_MIN || v > INT_MAX)
    wrong_type(key, "an integer between -2147483648 and 2147483647", j);
  into = static_cast<int>(v);
}
void take(const std::string& key, const nlohmann::json& j, std::uint64_t& into) {
  if (!j.is_number_unsigned()) wrong_type(key, "a non-negative integer", j);
  into = j.get<std::uint64_t>();
}
void take(const std::string& key, const nlohmann::json& j, double& into) {
  if (!j.is_number()) wrong_type(key, "a number", j);
  into = j.get<double>();
}
void take(const std::string& key, const nlohmann::json& j, std::string& into) {
  if (!j.is_string()) wrong_type(key, "a string", j);
  into = j.get<std::string>();
}

// Memory a run needs on this machine, in bytes, counted generously: every rank's share of the
// parameters with their gradient and Adam's two moments, and the activations autograd keeps for
// the micro-batches a stage holds at once (Korthikanti et al., "Reducing Activation Recomputation
// in Large Transformer Models": s*b*h*(34 + 5*a*s/h) bytes a layer in 16-bit; twice that here).
double memory_needed(const TrainConfig& c, int vocab) {
  const double d = c.dim, L = c.layers, T = c.seq_len, b = c.microbatch_size, a = c.heads;
  const double params = vocab * d + T * d + L * (12 * d * d + 13 * d) + 2 * d;
  const double per_layer = 2 * T * b * d * (34 + 5 * a * T / d);
  const double in_flight = c.schedule == "gpipe" ? c.microbatches : std::min<double>(c.microbatches, c.stages * 2);
  const double layers_per_rank = std::ceil(L / c.stages);
  // A checkpointed micro-batch keeps only its input (2 T b d bytes here) until its backward, which
  // rebuilds one micro-batch's activations at a time.
  if (c.checkpoint == "always")
    return c.dp * (16 * params + (in_flight * 2 * T * b * d + layers_per_rank * per_layer) * c.stages);
  return c.dp * (16 * params + in_flight * layers_per_rank * per_layer * c.stages);
}

double physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size) : 0.0;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 1e12 ? "%.3g" : "%.1f", bytes / (1ull << 30));
  return std::string(buf) + " GiB";
}

std::string show(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  const auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(path), ec);
  return ec ? path : p.string();
}

// An output must not be an input, nor a directory, and its directory must be writable (or
// creatable under a writable one).
void check_output(const std::string& flag, const std::string& path, const TrainConfig& c) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  if (!c.data.empty() && canonical(path) == canonical(c.data))
    throw ConfigError(flag + " " + path + " is the --data file: the run would overwrite its own corpus");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw ConfigError(flag + " " + path + " is a directory; give a file name");
  fs::path dir = fs::absolute(path).parent_path();
  while (!dir.empty() && !fs::exists(dir, ec) && dir != dir.parent_path()) dir = dir.parent_path();
  if (!fs::is_directory(dir, ec) || access(dir.c_str(), W_OK) != 0)
    throw ConfigError(flag + " " + path + " cannot be written: " + dir.string() + " is not a writable directory");
}

}  // namespace

GptConfig model_config(const TrainConfig& c, int vocab) {
  GptConfig g;
  g.vocab = vocab;
  g.dim = c.dim;
  g.heads = c.heads;
  g.layers = c.layers;
  g.seq_len = c.seq_len;
  g.seed = c.seed;
  g.dropout = c.dropout;
  return g;
}

std::string output_path(const TrainConfig& c, const std::string& chosen, const char* name) {
  if (chosen == "-") return "";
  return chosen.empty() ? c.out + "/" + name : chosen;
}

void check_train_config(const TrainConfig& c) {
  auto one = [](int v, const char* flag) {
    if (v < 1) throw ConfigError(std::string(flag) + " must be at least 1, got " + std::to_string(v));
  };
  one(c.stages, "--stages");
  one(c.dp, "--dp");
  one(c.microbatches, "--microbatches");
  one(c.microbatch_size, "--microbatch-size");
  one(c.steps, "--steps");
  one(c.eval_every, "--eval-every");
  one(c.eval_batches, "--eval-batches");
  one(c.layers, "--layers");
  one(c.dim, "--dim");
  one(c.heads, "--heads");
  one(c.seq_len, "--seq-len");
  const long long ranks = static_cast<long long>(c.stages) * c.dp;
  require(ranks <= kMaxTrainRanks, "--stages " + std::to_string(c.stages) + " x --dp " + std::to_string(c.dp) + " = " +
                                       std::to_string(ranks) + " ranks; tpipe train starts at most " +
                                       std::to_string(kMaxTrainRanks) + " on one machine");
  require(static_cast<long long>(c.microbatches) * c.microbatch_size * c.dp <= INT_MAX,
          "--microbatches x --microbatch-size x --dp is too large a batch");
  require(c.save_every >= 0, "--save-every must be >= 0 (0: only at the end)");
  require(c.keep >= 0, "--keep must be >= 0 (0: keep every checkpoint)");
  require(c.stop_after >= 0 && c.stop_after <= c.steps,
          "--stop-after must be between 0 (off) and --steps " + std::to_string(c.steps));
  require(c.stop_after == 0 || c.checkpoints != "-",
          "--stop-after ends the run with a checkpoint to resume from, but --checkpoints is '-'");
  require(c.virtual_stages >= 0, "--virtual-stages must be >= 0 (0: the schedule's own)");
  require(std::isfinite(c.lr) && c.lr > 0, "--lr must be a positive number, got " + show(c.lr));
  require(std::isfinite(c.clip) && c.clip >= 0,
          "--clip must be a number >= 0 (0: no clipping), got " + show(c.clip));
  require(std::isfinite(c.timeout) && c.timeout > 0 && c.timeout <= 86400,
          "--timeout must be a number of seconds in (0, 86400], got " + show(c.timeout));
  require(c.on_nonfinite == "stop" || c.on_nonfinite == "skip",
          "--on-nonfinite must be stop or skip, got '" + c.on_nonfinite + "'");
  require(c.sample_chars >= 0, "--sample-chars must be >= 0");
  require(c.checkpoint == "never" || c.checkpoint == "always" || c.checkpoint == "except_last",
          "--checkpoint must be always, except_last or never, got '" + c.checkpoint + "'");
  require(c.plan.empty() || c.plan == "auto", "--plan must be auto (or not given), got '" + c.plan + "'");
  require(std::isfinite(c.dropout) && c.dropout >= 0 && c.dropout < 1,
          "--dropout must be a number in [0, 1), got " + show(c.dropout));
  // An unknown name says which ones exist; the schedule gives the number of stages.
  const int num_stages = make_schedule(c.schedule, c.stages, c.microbatches, c.virtual_stages).num_stages();
  check_config(model_config(c, 2));
  const int specs = c.layers + 4;  // embed, pos, blocks, ln_f, lm_head
  const std::string cut = num_stages == c.stages ? "--stages " + std::to_string(c.stages)
                                                 : std::to_string(num_stages) + " stages (--stages " +
                                                       std::to_string(c.stages) + " x " +
                                                       std::to_string(num_stages / c.stages) + " per rank)";
  require(num_stages <= specs, cut + " is more than the " + std::to_string(specs) + " layers to cut (embed, pos, " +
                                   std::to_string(c.layers) + " blocks, ln_f, lm_head); use fewer stages or more "
                                   "--layers");
  check_partition_method(c.partition, specs, num_stages);
  require(c.optimizer == "sgd" || c.optimizer == "adam" || c.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + c.optimizer + "'");
  const double need = memory_needed(c, 256), have = physical_memory();
  if (have > 0 && need > have)
    throw ConfigError("this model and batch need about " + gib(need) + " of memory over " + std::to_string(ranks) +
                      " ranks (weights, gradients, optimizer state and activations), more than this machine's " +
                      gib(have) + ": lower --seq-len, --microbatch-size, --dim or --layers");
  if (!c.data.empty()) {
    std::error_code ec;
    require(!std::filesystem::is_directory(c.data, ec), "--data " + c.data + " is a directory; give a text file");
    require(std::ifstream(c.data).good(), "cannot read --data " + c.data + ": no such file, or not readable");
  }
  check_output("--metrics", output_path(c, c.metrics, "metrics.jsonl"), c);
  check_output("--trace", output_path(c, c.trace, "trace.json"), c);
  check_output("--timeline", output_path(c, c.timeline, "timeline.svg"), c);
  const std::string root = checkpoint_root(c);
  if (!root.empty() && !c.data.empty() && canonical(root) == canonical(c.data))
    throw ConfigError("--checkpoints " + root + " is the --data file");
}

nlohmann::json to_json(const TrainConfig& c) {
  nlohmann::json j;
#define TPIPE_WRITE(key) j[#key] = c.key;
  TPIPE_TRAIN_FIELDS(TPIPE_WRITE)
#undef TPIPE_WRITE
  return j;
}

void update_from_json(TrainConfig& c, const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("the config must be a JSON object of keys (\"seq_len\": 64, ...), got " +
                                        j.dump().substr(0, 60));
  const nlohmann::json known = to_json(c);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.contains(it.key())) throw ConfigError("unknown key '" + it.key() + "' in the config file");
  TrainConfig next = c;  // all or nothing
#define TPIPE_READ(key) \
  if (j.contains(#key)) take(#key, j.at(#key), next.key);
  TPIPE_TRAIN_FIELDS(TPIPE_READ)
#undef TPIPE_READ
  c = next;
}

}  // namespace tpipe
