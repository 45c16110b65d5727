// tpipe train-script against PyTorch itself: the example (Debian's python3-torch) defines a
// model, scripts it in float64, writes a batch and trains it in a plain loop; tpipe trains the same
// files pipelined. Losses and the exported model's outputs agree within 1e-10. Skipped with a message
// where Python cannot import torch.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "shell.h"
#include "temp_dir.h"

namespace {

using tpipe::testing::Output;

// The README's example: writes model.pt and data.pt; with --check, trains them in a plain loop
// (printing each step's loss) and compares the outputs of a trained file with its own.
const char* kExample = TPIPE_SOURCE_DIR "/examples/pytorch_model/model.py";

bool python_has_torch() { return tpipe::testing::sh("/usr/bin/python3 -c 'import torch'").status == 0; }

TEST(TrainScriptCli, EqualsAPlainPyTorchLoop) {
  if (!python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)";
  for (const auto& [optimizer, flags] : {std::pair<std::string, std::string>{"sgd", "--lr 0.1 --momentum 0.9"},
                                         {"adamw", "--optimizer adamw --lr 0.01 --weight-decay 0.1"}}) {
    for (const char* layout : {"--stages 2 --schedule gpipe --microbatches 3", "--stages 3 --schedule 1f1b "
                                                                                "--microbatches 4"}) {
      SCOPED_TRACE(optimizer + " " + layout);
      const tpipe::testing::TempDir dir;
      const Output made = tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 " + kExample);
      ASSERT_EQ(made.status, 0) << made.text;
      const Output out = tpipe::testing::sh("cd " + dir.path + " && OPENBLAS_NUM_THREADS=1 " TPIPE_BIN
                                            " train-script --model model.pt --data data.pt --loss mse --steps 5 " +
                                            flags + " " + layout + " --out run --export trained.pt");
      ASSERT_EQ(out.status, 0) << out.text;
      const Output py = tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 " + kExample +
                                           " --check trained.pt " + optimizer);
      ASSERT_EQ(py.status, 0) << py.text;
      std::vector<double> want;
      double difference = -1;
      std::istringstream lines(py.text);
      for (std::string line; std::getline(lines, line);) {
        if (line.rfind("python step ", 0) == 0) want.push_back(std::stod(line.substr(line.find("loss ") + 5)));
        if (line.rfind("largest difference of the outputs: ", 0) == 0) difference = std::stod(line.substr(35));
      }
      ASSERT_EQ(want.size(), 5u) << py.text;
      std::ifstream metrics(dir.path + "/run/metrics.jsonl");
      std::vector<double> got;
      for (std::string line; std::getline(metrics, line);) got.push_back(nlohmann::json::parse(line)["loss"]);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(got[s], want[s], 1e-10 * want[s]) << "step " << s;
      ASSERT_GE(difference, 0) << py.text;
      EXPECT_LE(difference, 1e-10) << "the exported model's outputs (largest absolute difference; they are ~1)";
    }
  }
}

TEST(TrainScriptCli, AMissingModelIsOneLine) {
  const Output out = tpipe::testing::sh(TPIPE_BIN " train-script --model /nonexistent/m.pt --data /nonexistent/d.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train-script: cannot load TorchScript file /nonexistent/m.pt: No such file or directory\n");
}

}  // namespace
