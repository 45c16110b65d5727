// `tpipe checkpoint info DIR` and `tpipe checkpoint export DIR OUT.pt`: a checkpoint's contents
// and integrity, and one state dict of it that Python's torch.load opens.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "tpipe/checkpoint/inspect.h"

namespace tpipe::cli {
namespace {

std::string join(const std::vector<int>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

int info(const std::string& path, bool json) {
  const auto in = checkpoint::inspect_checkpoint(path);
  const auto& m = in.manifest;
  if (json) {
    nlohmann::json j = checkpoint::to_json(m);
    j["path"] = in.path;
    j["parameters"] = in.parameters;
    j["bytes"] = in.bytes;
    j["problems"] = in.problems;
    j["valid"] = in.problems.empty();
    std::cout << j.dump(1) << "\n";
    return in.problems.empty() ? 0 : 1;
  }
  std::printf("checkpoint   %s (format version %d)\n", in.path.c_str(), m.version);
  std::printf("step         %lld\n", static_cast<long long>(m.step));
  std::printf("layout       %d stages x %d %s, %s, %d micro-batches, partition %s\n", m.layout.pp, m.layout.dp,
              m.layout.dp == 1 ? "replica" : "replicas", m.layout.schedule.c_str(), m.layout.microbatches,
              join(m.layout.partition).c_str());
  std::printf("layers       %zu (%zu modules", m.layers.size(), m.modules.size());
  int tied = 0;
  for (const auto& l : m.layers) tied += !l.tie.empty();
  if (tied > 0) std::printf(", %d positions of tied weights", tied);
  std::printf(")\n");
  std::printf("parameters   %lld\n", static_cast<long long>(in.parameters));
  std::printf("optimizer    %s\n", m.optimizer.empty() ? "(none saved)" : m.optimizer.c_str());
  std::printf("files        %zu, %.1f MB\n", m.files.size(), in.bytes / 1e6);
  if (in.problems.empty()) {
    std::printf("valid        yes: every file matches its size and SHA-256\n");
    return 0;
  }
  std::printf("valid        NO:\n");
  for (const auto& p : in.problems) std::printf("  %s\n", p.c_str());
  return 1;
}

}  // namespace

int checkpoint_main(int argc, char** argv) {
  CLI::App app{"Inspect or export a checkpoint written by PipelineEngine::save (tpipe train writes them)",
               "tpipe checkpoint"};
  app.require_subcommand(1);
  std::string path, out;
  bool json = false;
  auto* i = app.add_subcommand("info", "what the checkpoint holds and whether every file is intact (exit 1 if not)");
  i->add_option("DIR", path, "a checkpoint, or a directory of them (its latest)")->required();
  i->add_flag("--json", json, "the manifest and the findings as JSON");
  auto* e = app.add_subcommand("export", "one state dict {\"<layer>.<tensor>\": tensor} that torch.load opens");
  e->add_option("DIR", path, "a checkpoint, or a directory of them (its latest)")->required();
  e->add_option("OUT", out, "the .pt file to write")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err);
  }
  if (i->parsed()) return info(path, json);
  const int n = checkpoint::export_state_dict(path, out);
  std::printf("wrote %s: %d tensors\n", out.c_str(), n);
  return 0;
}

}  // namespace tpipe::cli
