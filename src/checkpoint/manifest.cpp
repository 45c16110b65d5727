// manifest.json to and from JSON, with errors that name the file and the field (see manifest.h).
#include "tpipe/checkpoint/manifest.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <fstream>

#include "tpipe/error.h"

namespace tpipe::checkpoint {
namespace {

nlohmann::json tensors_json(const std::vector<TensorInfo>& ts) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& t : ts) a.push_back({{"name", t.name}, {"shape", t.shape}, {"dtype", t.dtype}});
  return a;
}

std::vector<TensorInfo> tensors_from(const nlohmann::json& a) {
  std::vector<TensorInfo> ts;
  for (const auto& t : a) ts.push_back({t.at("name"), t.at("shape").get<std::vector<std::int64_t>>(), t.at("dtype")});
  return ts;
}

}  // namespace

nlohmann::json to_json(const Manifest& m) {
  nlohmann::json layers = nlohmann::json::array(), modules = nlohmann::json::object(),
                 files = nlohmann::json::object();
  for (const auto& l : m.layers) {
    nlohmann::json e{{"name", l.name}};
    if (!l.tie.empty()) e["tie"] = l.tie;
    layers.push_back(e);
  }
  for (const auto& [key, mod] : m.modules)
    modules[key] = {{"file", mod.file}, {"optimizer_file", mod.optimizer_file},
                    {"parameters", tensors_json(mod.parameters)}, {"buffers", tensors_json(mod.buffers)}};
  for (const auto& [path, d] : m.files) files[path] = {{"bytes", d.bytes}, {"sha256", d.sha256}};
  return {{"format", kFormat},
          {"version", m.version},
          {"step", m.step},
          {"layout",
           {{"pp", m.layout.pp}, {"dp", m.layout.dp}, {"partition", m.layout.partition},
            {"schedule", m.layout.schedule}, {"microbatches", m.layout.microbatches}}},
          {"optimizer", m.optimizer},
          {"learning_rates", m.learning_rates},
          {"layers", layers},
          {"modules", modules},
          {"files", files},
          {"extra", nlohmann::json::parse(m.extra)}};
}

Manifest manifest_from_json(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string() || j["format"] != kFormat)
    throw ConfigError(path + " is not a tpipe checkpoint manifest (no \"format\": \"" + kFormat + "\")");
  Manifest m;
  try {
    m.version = j.at("version").get<int>();
    if (m.version > kFormatVersion)
      throw ConfigError(path + " was written by a newer tpipe: checkpoint format version " +
                        std::to_string(m.version) + ", this tpipe reads version " + std::to_string(kFormatVersion) +
                        " and older");
    m.step = j.at("step").get<std::int64_t>();
    const auto& lay = j.at("layout");
    m.layout = {lay.at("pp"), lay.at("dp"), lay.at("partition").get<std::vector<int>>(), lay.at("schedule"),
                lay.at("microbatches")};
    m.optimizer = j.at("optimizer").get<std::string>();
    m.learning_rates = j.value("learning_rates", std::vector<double>{});
    for (const auto& l : j.at("layers")) m.layers.push_back({l.at("name"), l.value("tie", "")});
    for (const auto& [key, mod] : j.at("modules").items())
      m.modules[key] = {mod.at("file"), mod.at("optimizer_file"), tensors_from(mod.at("parameters")),
                        tensors_from(mod.at("buffers"))};
    for (const auto& [file, d] : j.at("files").items()) m.files[file] = {d.at("bytes"), d.at("sha256")};
    m.extra = j.at("extra").dump();
  } catch (const nlohmann::json::exception& e) {
    // e.what() reads "[json.exception.out_of_range.403] key 'step' not found": keep the last part.
    std::string why = e.what();
    if (const auto k = why.find("] "); k != std::string::npos) why = why.substr(k + 2);
    throw ConfigError(path + " is damaged: " + why);
  }
  for (const auto& l : m.layers)
    if (!m.modules.count(l.module()))
      throw ConfigError(path + " is damaged: layer '" + l.name + "' refers to module '" + l.module() +
                        "', which it does not list");
  return m;
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  std::ifstream in(path);
  if (!in) throw ConfigError("no checkpoint at " + dir + ": cannot read " + path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception&) {
    throw ConfigError(path + " is damaged: not valid JSON");
  }
  return manifest_from_json(j, path);
}

void check_layers(const Manifest& m, const std::vector<LayerEntry>& model, const std::string& dir) {
  std::map<std::string, const LayerEntry*> saved;
  for (const auto& l : m.layers) saved[l.name] = &l;
  for (const auto& l : model) {
    auto it = saved.find(l.name);
    if (it == saved.end())
      throw ConfigError("checkpoint " + dir + " has no layer '" + l.name +
                        "', which the model has: it was saved from another model");
    if (it->second->tie != l.tie)
      throw ConfigError("checkpoint " + dir + ": layer '" + l.name + "' is " +
                        (it->second->tie.empty() ? "untied" : "tied to '" + it->second->tie + "'") +
                        " there, but " + (l.tie.empty() ? "untied" : "tied to '" + l.tie + "'") + " in the model");
    saved.erase(it);
  }
  if (!saved.empty())
    throw ConfigError("checkpoint " + dir + " has layer '" + saved.begin()->first +
                      "', which the model does not have: it was saved from another model");
}

std::string file_stem(const std::string& key) {
  static const char* hex = "0123456789ABCDEF";
  std::string s;
  for (std::size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    const bool keep = std::isalnum(c) || c == '_' || c == '-' || (c == '.' && i > 0);
    if (keep)
      s += static_cast<char>(c);
    else
      s += {'%', hex[c >> 4], hex[c & 15]};
  }
  return s.empty() ? "%" : s;
}

std::string describe(const TensorInfo& t) {
  std::string s = t.dtype + " [";
  for (std::size_t i = 0; i < t.shape.size(); ++i) s += (i ? "," : "") + std::to_string(t.shape[i]);
  return s + "]";
}

}  // namespace tpipe::checkpoint
