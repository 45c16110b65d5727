// Uniform, explicit and balanced partitions of layers into stages (see partition.h).
#include "tpipe/partition.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "tpipe/error.h"

namespace tpipe {

int Partition::stage_of(int layer) const {
  for (int s = 0; s < num_stages(); ++s)
    if (layer >= begin(s) && layer < end(s)) return s;
  throw ConfigError("layer " + std::to_string(layer) + " is outside the partition of " +
                    std::to_string(num_layers()) + " layers");
}

Partition partition_uniform(int layers, int stages) {
  if (stages < 1) throw ConfigError("need at least one stage, got " + std::to_string(stages));
  if (layers < stages)
    throw ConfigError("cannot cut " + std::to_string(layers) + " layers into " + std::to_string(stages) +
                      " stages: every stage needs at least one layer");
  std::vector<int> sizes(stages, layers / stages);
  for (int s = 0; s < layers % stages; ++s) ++sizes[s];
  return partition_explicit(sizes, layers);
}

Partition partition_explicit(const std::vector<int>& sizes, int layers) {
  if (sizes.empty()) throw ConfigError("an explicit partition needs at least one stage size");
  Partition p;
  p.bounds.push_back(0);
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    if (sizes[s] < 1)
      throw ConfigError("stage " + std::to_string(s) + " of the partition has " + std::to_string(sizes[s]) +
                        " layers; every stage needs at least one");
    p.bounds.push_back(p.bounds.back() + sizes[s]);
  }
  if (p.bounds.back() != layers)
    throw ConfigError("partition " + to_string(p) + " covers " + std::to_string(p.bounds.back()) +
                      " layers, but the model has " + std::to_string(layers));
  return p;
}

Partition partition_from_string(const std::string& method, int layers, int stages) {
  if (method == "uniform") return partition_uniform(layers, stages);
  std::vector<int> sizes;
  std::stringstream in(method);
  for (std::string tok; std::getline(in, tok, ',');) {
    std::size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size() || tok.empty())
      throw ConfigError("partition '" + method + "': expected 'uniform' or layer counts such as 3,3,2");
    sizes.push_back(v);
  }
  if (static_cast<int>(sizes.size()) != stages)
    throw ConfigError("partition '" + method + "' has " + std::to_string(sizes.size()) + " stages, but " +
                      std::to_string(stages) + " were asked for");
  return partition_explicit(sizes, layers);
}

bool partition_weighs_layers(const std::string& method) {
  return method == "parameters" || method.rfind("type:", 0) == 0 || partition_profiles_layers(method);
}

bool partition_profiles_layers(const std::string& method) { return method == "profile"; }

namespace {

std::regex layer_pattern(const std::string& method) {
  const std::string pattern = method.substr(5);
  if (pattern.empty()) throw ConfigError("partition '" + method + "': expected a regular expression after 'type:'");
  try {
    return std::regex(pattern, std::regex::ECMAScript | std::regex::icase);
  } catch (const std::regex_error& e) {
    throw ConfigError("partition '" + method + "': '" + pattern + "' is not a regular expression (" + e.what() + ")");
  }
}

}  // namespace

void check_partition_method(const std::string& method, int layers, int stages) {
  if (!partition_weighs_layers(method)) {
    partition_from_string(method, layers, stages);
    return;
  }
  if (method.rfind("type:", 0) == 0) layer_pattern(method);
  partition_uniform(layers, stages);  // stages in [1, layers]
}

Partition partition_from_string(const std::string& method, int stages, const std::vector<LayerFacts>& facts,
                                const std::vector<double>& memory, double memory_cap) {
  const int layers = static_cast<int>(facts.size());
  if (!partition_weighs_layers(method)) return partition_from_string(method, layers, stages);
  std::vector<double> cost;
  if (method == "parameters") {
    for (const auto& f : facts) cost.push_back(static_cast<double>(f.parameters));
  } else if (method == "profile") {
    for (const auto& f : facts) {
      if (f.rows <= 0)
        throw ConfigError("partition 'profile' needs every layer profiled on a sample micro-batch; '" + f.name +
                          "' was not");
      cost.push_back(f.forward_s + f.backward_s);
    }
    return partition_balanced(cost, stages, memory, memory_cap);
  } else {
    const std::regex re = layer_pattern(method);
    for (const auto& f : facts) cost.push_back(std::regex_search(f.name, re) ? 1.0 : 0.0);
    if (std::all_of(cost.begin(), cost.end(), [](double c) { return c == 0; }))
      throw ConfigError("partition '" + method + "': no layer name matches '" + method.substr(5) + "'");
  }
  return partition_balanced(cost, stages);
}

std::string to_string(const Partition& p) {
  std::string s;
  for (int st = 0; st < p.num_stages(); ++st) s += (st ? "," : "") + std::to_string(p.size(st));
  return s;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Numbers in messages: "6", "0.25", "1.5e+20", "inf" (integers print without a fraction).
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

// Per-layer costs or memory: each finite and non-negative, and their total finite (every stage
// sum is then finite, so infinity can mean "no cut" below).
void check_per_layer(const std::vector<double>& v, const std::string& what) {
  double total = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0)
      throw ConfigError("layer " + std::to_string(i) + " has " + what + " " + number(v[i]) + "; a layer's " + what +
                        " must be finite and non-negative");
    total += v[i];
  }
  if (!std::isfinite(total)) throw ConfigError("the layers' " + what + " adds up to more than a double can hold");
}

// The smallest possible largest stage sum of `value` over the cuts of all its layers into
// `stages` non-empty stages whose sums of `limit` stay <= cap (no limit when `limit` is empty);
// infinity when no cut fits. Stage sums are added first layer to last, as everywhere here.
double min_max_stage(const std::vector<double>& value, int stages, const std::vector<double>& limit, double cap) {
  const int layers = static_cast<int>(value.size());
  // best[i]: over cuts of the first i layers into s stages, the smallest largest sum (s = round).
  std::vector<double> best(layers + 1, kInf), next;
  best[0] = 0;
  for (int s = 1; s <= stages; ++s) {
    const int last = layers - (stages - s);  // leave one layer for each later stage
    next.assign(layers + 1, kInf);
    for (int j = s - 1; j < last; ++j) {
      if (best[j] == kInf) continue;
      double sum = 0, held = 0;
      for (int i = j + 1; i <= last; ++i) {
        sum += value[i - 1];
        if (!limit.empty() && (held += limit[i - 1]) > cap) break;  // memory only grows with i
        next[i] = std::min(next[i], std::max(best[j], sum));
      }
    }
    best.swap(next);
  }
  return best[layers];
}

// Why no cut fits under the memory cap: the first layer that alone exceeds it, else the smallest
// cap that would fit.
[[noreturn]] void throw_no_fit(const std::vector<double>& memory, int stages, double cap) {
  for (std::size_t i = 0; i < memory.size(); ++i)
    if (memory[i] > cap)
      throw ConfigError("layer " + std::to_string(i) + " alone needs " + number(memory[i]) +
                        " bytes of memory, more than the cap of " + number(cap) + " bytes");
  throw ConfigError("no cut of " + std::to_string(memory.size()) + " layers into " + std::to_string(stages) +
                    " stages keeps every stage within the memory cap of " + number(cap) +
                    " bytes; the smallest cap that fits is " + number(min_max_stage(memory, stages, {}, kInf)) +
                    " bytes");
}

// Compares, largest first, the sorted-descending values a[0..n) with c inserted against the
// sorted-descending b[0..n]: negative, zero or positive like strcmp (the leximax order).
int compare_with_inserted(const double* a, int n, double c, const double* b) {
  bool inserted = false;
  int p = 0;
  for (int k = 0; k <= n; ++k) {
    double x;
    if (!inserted && (p == n || c >= a[p])) {
      x = c;
      inserted = true;
    } else {
      x = a[p++];
    }
    if (x != b[k]) return x < b[k] ? -1 : 1;
  }
  return 0;
}

// Writes a[0..n) with c inserted, sorted descending, to out[0..n].
void insert_sorted(const double* a, int n, double c, double* out) {
  int p = 0, k = 0;
  while (p < n && a[p] > c) out[k++] = a[p++];
  out[k++] = c;
  while (p < n) out[k++] = a[p++];
}

}  // namespace

// Two passes. The first finds the smallest largest stage cost (`top`), or that no cut fits. The
// second keeps, for every prefix of i layers cut into s stages, the leximax-smallest sorted stage
// costs among stages no costlier than `top`. That is enough: adding the same stage to two
// prefixes keeps their leximax order, strictly, so an optimal cut's prefix is an optimal prefix.
// Scanning the start j of the last stage upwards and replacing on ties picks the latest j, and
// recursively the latest earlier boundaries: rule 4 of the header.
Partition partition_balanced(const std::vector<double>& cost, int stages, const std::vector<double>& memory,
                             double memory_cap) {
  const int layers = static_cast<int>(cost.size());
  if (stages < 1) throw ConfigError("need at least one stage, got " + std::to_string(stages));
  if (layers < stages)
    throw ConfigError("cannot cut " + std::to_string(layers) + " layers into " + std::to_string(stages) +
                      " stages: every stage needs at least one layer");
  check_per_layer(cost, "cost");
  if (!memory.empty()) {
    if (memory.size() != cost.size())
      throw ConfigError("memory lists " + std::to_string(memory.size()) + " layers, but cost lists " +
                        std::to_string(layers));
    check_per_layer(memory, "memory");
    if (std::isnan(memory_cap) || memory_cap < 0)
      throw ConfigError("memory cap " + number(memory_cap) + " is not a non-negative number of bytes");
  }
  const std::vector<double> no_limit;
  const std::vector<double>& limit = memory.empty() ? no_limit : memory;

  const double top = min_max_stage(cost, stages, limit, memory_cap);
  if (top == kInf) throw_no_fit(memory, stages, memory_cap);

  // Round s: row i of `cur` (s values) holds the best sorted stage costs of the first i layers
  // in s stages, reached[i] whether any cut qualifies; start[s][i] is where its last stage begins.
  std::vector<std::vector<int>> start(stages + 1, std::vector<int>(layers + 1, -1));
  std::vector<double> prev, cur;
  std::vector<char> reached_prev(layers + 1, 0), reached;
  reached_prev[0] = 1;  // no layers in no stages
  for (int s = 1; s <= stages; ++s) {
    const int last = layers - (stages - s);
    cur.assign(static_cast<std::size_t>(layers + 1) * s, 0.0);
    reached.assign(layers + 1, 0);
    for (int j = s - 1; j < last; ++j) {
      if (!reached_prev[j]) continue;
      const double* before = prev.data() + static_cast<std::size_t>(j) * (s - 1);
      double sum = 0, held = 0;
      for (int i = j + 1; i <= last; ++i) {
        sum += cost[i - 1];
        if (sum > top) break;  // costs only grow with i
        if (!limit.empty() && (held += limit[i - 1]) > memory_cap) break;
        double* row = cur.data() + static_cast<std::size_t>(i) * s;
        if (reached[i] && compare_with_inserted(before, s - 1, sum, row) > 0) continue;
        insert_sorted(before, s - 1, sum, row);
        reached[i] = 1;
        start[s][i] = j;
      }
    }
    prev.swap(cur);
    reached_prev.swap(reached);
  }
  if (!reached_prev[layers]) throw std::logic_error("partition_balanced: the second pass lost the optimal cut");

  Partition p;
  p.bounds.assign(stages + 1, 0);
  for (int s = stages, i = layers; s >= 1; i = start[s][i], --s) p.bounds[s] = i;
  return p;
}

std::vector<double> stage_costs(const Partition& p, const std::vector<double>& cost) {
  if (p.num_layers() != static_cast<int>(cost.size()))
    throw ConfigError("partition " + to_string(p) + " covers " + std::to_string(p.num_layers()) +
                      " layers, but cost lists " + std::to_string(cost.size()));
  std::vector<double> out;
  for (int s = 0; s < p.num_stages(); ++s) {
    double sum = 0;
    for (int l = p.begin(s); l < p.end(s); ++l) sum += cost[l];
    out.push_back(sum);
  }
  return out;
}

}  // namespace tpipe
