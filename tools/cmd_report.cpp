// `tpipe report DIR` rebuilds a run's report.html from the files in its directory; `tpipe report
// A B ...` overlays the curves of several runs in one page (--out, default compare.html).
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <set>

#include "commands.h"
#include "tpipe/error.h"
#include "tpipe/report/page.h"
#include "tpipe/util/files.h"

namespace tpipe::cli {

int report_main(int argc, char** argv) {
  CLI::App app("Write the report page of a run directory (tpipe train's --out), or overlay several runs' curves",
               "tpipe report");
  std::vector<std::string> dirs;
  std::string out;
  app.add_option("DIR", dirs, "run directories: one rebuilds its report.html; several are compared")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--out", out, "the page to write (default: DIR/report.html for one run, compare.html for several)")
      ->type_name("FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Each run is named by its directory's name ("out/pp2/" too), or its whole path when two names
  // are alike.
  auto name_of = [](const std::string& dir) {
    const auto path = std::filesystem::path(dir).lexically_normal();
    return (path.filename().empty() ? path.parent_path() : path).filename().string();
  };
  std::set<std::string> names;
  for (const auto& d : dirs) names.insert(name_of(d));
  const bool alike = names.size() < dirs.size();
  std::vector<report::RunFiles> runs;
  for (const auto& d : dirs)
    runs.push_back(report::read_run(report::run_paths(d), alike ? std::filesystem::path(d).lexically_normal().string()
                                                                 : name_of(d)));
  if (out.empty()) out = dirs.size() == 1 ? (std::filesystem::path(dirs[0]) / "report.html").string() : "compare.html";
  write_file_atomic(out, report::report_html(runs));
  std::cout << "wrote " << out << " (" << runs.size() << (runs.size() == 1 ? " run" : " runs") << ")\n";
  return 0;
}

}  // namespace tpipe::cli
