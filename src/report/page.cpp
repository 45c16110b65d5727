// The run report page (see page.h).
#include "tpipe/report/page.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include "tpipe/report/chart.h"
#include "run_parts.h"

namespace tpipe::report {
namespace {

const char* kStyle = R"(
body{font-family:sans-serif;margin:24px;color:#222;max-width:1220px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.summary{color:#444;margin:2px 0}
.charts{display:flex;flex-wrap:wrap;gap:14px}
.charts svg{border:1px solid #eee;background:#fff}
.log{display:none}#logscale:checked~.charts .log{display:block}#logscale:checked~.charts .lin{display:none}
.timelines{display:flex;flex-wrap:wrap;gap:14px}.timelines figure{margin:0;flex:1 1 560px}
.timelines img{width:100%;border:1px solid #eee}figcaption{color:#444;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:0 18px 12px 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}
pre{background:#f7f7f7;padding:10px;white-space:pre-wrap;font-size:13px}
)";

// What one chart shows of a metrics line: a value; NaN where the value is null (a skipped step's
// loss), which breaks the curve there; nothing where the line lacks the key (validation losses
// come every few steps), which the curve passes over.
using Pick = std::function<std::optional<double>(const nlohmann::json&)>;

std::optional<double> number(const nlohmann::json& j, const char* key, double scale = 1) {
  const auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  return it->is_number() ? it->get<double>() * scale : std::numeric_limits<double>::quiet_NaN();
}

Series series_of(const RunFiles& run, const std::string& name, const Pick& pick) {
  Series s;
  s.name = name;
  for (const auto& line : run.steps)
    if (const auto y = pick(line)) {
      s.x.push_back(number(line, "step").value_or(std::numeric_limits<double>::quiet_NaN()));
      s.y.push_back(*y);
    }
  return s;
}

bool has_data(const Series& s) {
  for (std::size_t i = 0; i < s.y.size(); ++i)
    if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) return true;
  return false;
}

std::string prefix(const std::vector<RunFiles>& runs, const RunFiles& run) {
  return runs.size() > 1 ? run.label + ": " : "";
}

// One chart of every run's series named by `what` (name, pick, dashed); empty when no run has
// any of them.
struct Curve {
  std::string name;
  Pick pick;
  bool dashed = false;
};
std::string chart_of(const std::vector<RunFiles>& runs, const std::string& id, const std::string& title,
                     const std::string& y_label, const std::vector<Curve>& curves, bool log_y = false) {
  Chart c;
  c.id = id, c.title = title, c.x_label = "step", c.y_label = y_label, c.log_y = log_y;
  for (std::size_t r = 0; r < runs.size(); ++r)
    for (const Curve& curve : curves) {
      Series s = series_of(runs[r], prefix(runs, runs[r]) + curve.name, curve.pick);
      s.dashed = curve.dashed || r > 0;
      if (has_data(s)) c.series.push_back(std::move(s));
    }
  if (c.series.empty()) return "";
  return chart_svg(c);
}

// Per-rank values of a metrics array key, one curve per rank of the widest run.
std::vector<Curve> per_rank(const std::vector<RunFiles>& runs, const char* key, double scale) {
  std::size_t ranks = 0;
  for (const auto& run : runs)
    for (const auto& line : run.steps)
      if (line.contains(key) && line[key].is_array()) ranks = std::max(ranks, line[key].size());
  std::vector<Curve> out;
  for (std::size_t r = 0; r < ranks; ++r)
    out.push_back({"rank " + std::to_string(r), [key, r, scale](const nlohmann::json& j) -> std::optional<double> {
                     const auto it = j.find(key);
                     if (it == j.end() || !it->is_array() || r >= it->size()) return std::nullopt;
                     return (*it)[r].is_number() ? (*it)[r].get<double>() * scale
                                                 : std::numeric_limits<double>::quiet_NaN();
                   }});
  return out;
}

std::string curves_section(const std::vector<RunFiles>& runs) {
  std::string o = "<h2>Curves</h2>\n<input type=\"checkbox\" id=\"logscale\"><label for=\"logscale\"> loss on a "
                  "log scale</label>\n<div class=\"charts\">\n";
  const std::vector<Curve> loss{{"train", [](const nlohmann::json& j) { return number(j, "loss"); }},
                                {"validation", [](const nlohmann::json& j) { return number(j, "val_loss"); }, true}};
  o += "<div class=\"lin\">" + chart_of(runs, "chart-loss", "Loss", "loss", loss) + "</div>\n";
  o += "<div class=\"log\">" + chart_of(runs, "chart-loss-log", "Loss", "loss", loss, true) + "</div>\n";
  const std::vector<std::string> more{
      chart_of(runs, "chart-lr", "Learning rate", "learning rate",
               {{"learning rate", [](const nlohmann::json& j) { return number(j, "lr"); }}}),
      chart_of(runs, "chart-grad-norm", "Gradient norm", "global L2 norm",
               {{"before clipping", [](const nlohmann::json& j) { return number(j, "grad_norm"); }},
                {"after clipping", [](const nlohmann::json& j) { return number(j, "grad_norm_clipped"); }, true}}),
      chart_of(runs, "chart-throughput", "Throughput", "per second",
               {{"tokens/s", [](const nlohmann::json& j) { return number(j, "tokens_per_s"); }},
                {"samples/s", [](const nlohmann::json& j) {
                   return j.contains("tokens_per_s") ? std::nullopt : number(j, "samples_per_s");
                 }}}),
      chart_of(runs, "chart-gflops", "Model GFLOP/s (all ranks)", "GFLOP/s",
               {{"achieved", [](const nlohmann::json& j) { return number(j, "flops_per_s", 1e-9); }}}),
      chart_of(runs, "chart-bubble", "Measured bubble", "idle share of the step",
               {{"bubble", [](const nlohmann::json& j) { return number(j, "bubble"); }}}),
      chart_of(runs, "chart-activations", "Activation memory per rank", "MiB at peak",
               per_rank(runs, "activation_peak_bytes_per_rank", 1.0 / (1 << 20))),
  };
  for (const auto& chart : more)
    if (!chart.empty()) o += "<div>" + chart + "</div>\n";
  return o + "</div>\n";
}

std::string timelines_section(const RunFiles& run, bool several) {
  if (run.measured_svg.empty() && run.planned_svg.empty()) return "";
  std::string o = "<h2>Timeline" + (several ? " of " + escape_xml(run.label) : std::string()) + "</h2>\n";
  o += "<div class=\"timelines\">\n";
  const nlohmann::json last = last_measured(run.steps);
  if (!run.measured_svg.empty())
    o += "<figure><img alt=\"measured timeline\" src=\"" + svg_data_uri(run.measured_svg) + "\"><figcaption>" +
         "measured" + (last.is_null() ? std::string() : ", step " + last["step"].dump() + ", bubble " +
                                                            percent(last["bubble"].get<double>())) +
         "</figcaption></figure>\n";
  const auto planned = run.info.value("planned", nlohmann::json::object());
  if (!run.planned_svg.empty())
    o += "<figure><img alt=\"planned timeline\" src=\"" + svg_data_uri(run.planned_svg) + "\"><figcaption>planned" +
         (planned.contains("bubble") ? ", bubble " + percent(planned["bubble"].get<double>()) : std::string()) +
         (planned.contains("what") ? ": " + escape_xml(planned["what"].get<std::string>()) : std::string()) +
         "</figcaption></figure>\n";
  else if (planned.contains("what"))
    o += "<p class=\"summary\">" + escape_xml(planned["what"].get<std::string>()) + "</p>\n";
  return o + "</div>\n";
}

std::string facts_section(const RunFiles& run, bool several) {
  std::string o = "<h2>Run" + (several ? " " + escape_xml(run.label) : std::string()) + "</h2>\n";
  o += "<p class=\"summary\">" + escape_xml(summary_line(run)) + "</p>\n";
  for (const char* part : {"layout", "machine", "config"})
    if (run.info.contains(part) && run.info[part].is_object()) o += key_value_table(part, run.info[part]);
  if (run.info.contains("sample") && run.info["sample"].is_string())
    o += "<h2>Sample" + (several ? " of " + escape_xml(run.label) : std::string()) + "</h2>\n<pre>" +
         escape_xml(run.info["sample"].get<std::string>()) + "</pre>\n";
  return o;
}

}  // namespace

std::string report_html(const std::vector<RunFiles>& runs) {
  std::string title;
  for (const auto& run : runs)
    title += (title.empty() ? "" : " vs ") + run.info.value("title", run.label);
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                  "style-src 'unsafe-inline'; img-src data:\">\n<title>tpipe: " +
                  escape_xml(title) + "</title>\n<style>" + kStyle + "</style></head>\n<body>\n<h1>" +
                  escape_xml(title) + "</h1>\n";
  for (const auto& run : runs) o += "<p class=\"summary\">" + escape_xml(prefix(runs, run) + summary_line(run)) + "</p>\n";
  o += curves_section(runs);
  for (const auto& run : runs) o += timelines_section(run, runs.size() > 1);
  for (const auto& run : runs) o += facts_section(run, runs.size() > 1);
  return o + "</body></html>\n";
}

}  // namespace tpipe::report
