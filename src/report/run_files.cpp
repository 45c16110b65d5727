// Reading a run's files for its report, and the pieces of the page made of them (see page.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "run_parts.h"
#include "tpipe/error.h"
#include "tpipe/report/chart.h"
#include "tpipe/util/files.h"

namespace tpipe::report {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string short_number(double v) {
  char buf[32];
  if (std::abs(v) >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else if (std::abs(v) >= 1e4) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

RunPaths run_paths(const std::string& dir) {
  const std::filesystem::path d(dir);
  return {(d / "metrics.jsonl").string(), (d / "run.json").string(), (d / "timeline.svg").string(),
          (d / "planned.svg").string()};
}

RunFiles read_run(const RunPaths& paths, const std::string& label) {
  RunFiles run;
  run.label = label;
  std::ifstream metrics(paths.metrics);
  for (std::string line; std::getline(metrics, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step")) run.steps.push_back(std::move(j));
  }
  const std::string info = read_text(paths.run_info);
  if (!info.empty()) {
    auto j = nlohmann::json::parse(info, nullptr, false);
    if (j.is_object()) run.info = std::move(j);
  }
  if (run.steps.empty() && !metrics.is_open() && info.empty())
    throw ConfigError("no run to report in " + label + ": neither " + paths.metrics + " nor " + paths.run_info +
                      " exists");
  run.measured_svg = read_text(paths.measured_svg);
  run.planned_svg = read_text(paths.planned_svg);
  return run;
}

void write_report(const RunPaths& paths, const std::string& label, const std::string& out) {
  write_file_atomic(out, report_html({read_run(paths, label)}));
}

nlohmann::json last_measured(const std::vector<nlohmann::json>& steps) {
  for (auto it = steps.rbegin(); it != steps.rend(); ++it)
    if (it->contains("bubble") && (*it)["bubble"].is_number()) return *it;
  return nullptr;
}

std::string svg_data_uri(const std::string& svg) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = "data:image/svg+xml;base64,";
  out.reserve(out.size() + (svg.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < svg.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, svg.size() - i);
    unsigned v = 0;
    for (std::size_t k2 = 0; k2 < 3; ++k2)
      v = v << 8 | (k2 < n ? static_cast<unsigned char>(svg[i + k2]) : 0u);
    for (std::size_t k2 = 0; k2 < 4; ++k2) out += k2 <= n ? k[(v >> (18 - 6 * k2)) & 63] : '=';
  }
  return out;
}

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * share);
  return buf;
}

std::string summary_line(const RunFiles& run) {
  if (run.steps.empty()) return "no steps recorded yet";
  const auto& first = run.steps.front();
  const auto& last = run.steps.back();
  std::string s = "steps " + first["step"].dump() + " to " + last["step"].dump();
  if (last.contains("loss") && last["loss"].is_number()) s += " · loss " + short_number(last["loss"].get<double>());
  for (auto it = run.steps.rbegin(); it != run.steps.rend(); ++it)
    if (it->contains("val_loss") && (*it)["val_loss"].is_number()) {
      s += " · validation " + short_number((*it)["val_loss"].get<double>()) + " (step " + (*it)["step"].dump() + ")";
      break;
    }
  // Medians over the steps after the first, which warms up.
  auto median = [&](const char* key) {
    std::vector<double> v;
    for (std::size_t i = run.steps.size() > 1 ? 1 : 0; i < run.steps.size(); ++i)
      if (run.steps[i].contains(key) && run.steps[i][key].is_number()) v.push_back(run.steps[i][key].get<double>());
    if (v.empty()) return -1.0;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  if (const double t = median("tokens_per_s"); t >= 0) s += " · " + short_number(t) + " tokens/s";
  else if (const double q = median("samples_per_s"); q >= 0) s += " · " + short_number(q) + " samples/s";
  if (const double g = median("flops_per_s"); g > 0) s += " · " + short_number(g / 1e9) + " GFLOP/s";
  if (const double b = median("bubble"); b >= 0) s += " · bubble " + percent(b);
  return s + " (medians after the first step)";
}

std::string key_value_table(const std::string& caption, const nlohmann::json& object) {
  std::string o = "<table><tr><th colspan=\"2\">" + escape_xml(caption) + "</th></tr>\n";
  for (const auto& [key, value] : object.items())
    o += "<tr><td>" + escape_xml(key) + "</td><td>" +
         escape_xml(value.is_string() ? value.get<std::string>() : value.dump()) + "</td></tr>\n";
  return o + "</table>\n";
}

}  // namespace tpipe::report
