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

std::vector<double> metrics_losses(const std::string& path) {
  std::ifstream metrics(path);
  std::vector<double> got;
  for (std::string line; std::getline(metrics, line);) got.push_back(nlohmann::json::parse(line)["loss"]);
  return got;
}

// The flags a plain PyTorch loop has too: a cosine schedule (CosineAnnealingLR over the run) in
// float64 equals PyTorch's within 1e-10; --dtype float32 trains and exports a float64 file in float32,
// as `model.float()` on float32 data does (float32 sums in another order: 1e-5).
TEST(TrainScriptCli, CosineScheduleAndFloat32AreWhatPyTorchDoes) {
  if (!python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)";
  const tpipe::testing::TempDir dir;
  ASSERT_EQ(tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 " + kExample).status, 0);
  std::ofstream(dir.path + "/loop.py") << R"(import sys, torch
dtype = torch.float32 if sys.argv[1] == "float32" else torch.float64
m = torch.jit.load("model.pt").to(dtype)
x, y = torch.load("data.pt")
x, y = x.to(dtype), y.to(dtype)
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
for step in range(5):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(m(x), y)
    loss.backward()
    opt.step()
    sched.step()
    print(repr(loss.item()))
ours = torch.jit.load(sys.argv[2])
print(next(ours.parameters()).dtype, (ours(x) - m(x)).abs().max().item())
)";
  for (const std::string dtype : {"float64", "float32"}) {
    SCOPED_TRACE(dtype);
    const Output out = tpipe::testing::sh("cd " + dir.path + " && OPENBLAS_NUM_THREADS=1 " TPIPE_BIN
                                          " train-script --model model.pt --data data.pt --steps 5 --lr 0.1 "
                                          "--momentum 0.9 --lr-schedule cosine --dtype " + dtype +
                                          " --stages 2 --microbatches 3 --out " + dtype + " --export " + dtype + ".pt");
    ASSERT_EQ(out.status, 0) << out.text;
    const Output py = tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 loop.py " + dtype + " " + dtype +
                                         ".pt");
    ASSERT_EQ(py.status, 0) << py.text;
    std::istringstream lines(py.text);
    std::vector<double> want(5);
    for (double& w : want) lines >> w;
    std::string exported_dtype;
    double difference = -1;
    lines >> exported_dtype >> difference;
    const double tolerance = dtype == "float64" ? 1e-10 : 1e-5;
    const std::vector<double> got = metrics_losses(dir.path + "/" + dtype + "/metrics.jsonl");
    ASSERT_EQ(got.size(), want.size()) << py.text;
    for (std::size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(got[s], want[s], tolerance * want[s]) << "step " << s;
    EXPECT_EQ(exported_dtype, "torch." + dtype);
    EXPECT_GE(difference, 0) << py.text;
    EXPECT_LE(difference, tolerance) << "the exported model's outputs (largest absolute difference)";
  }
}

// A run stopped after step 2 (AdamW, cosine schedule, slices of the data) and resumed on another
// layout ends with the same losses, bit for bit, as the run that went straight through.
TEST(TrainScriptCli, StopAfterThenResumeOnAnotherLayoutEqualsTheStraightRun) {
  if (!python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)";
  const tpipe::testing::TempDir dir;
  ASSERT_EQ(tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 " + kExample).status, 0);
  const std::string run = "cd " + dir.path + " && OPENBLAS_NUM_THREADS=1 " TPIPE_BIN
                          " train-script --model model.pt --data data.pt --steps 5 --optimizer adamw --lr 0.01 "
                          "--lr-schedule cosine --batch-size 4 --microbatches 2 ";
  const Output straight = tpipe::testing::sh(run + "--out straight");
  ASSERT_EQ(straight.status, 0) << straight.text;
  const Output first = tpipe::testing::sh(run + "--out parts --stop-after 2");
  ASSERT_EQ(first.status, 0) << first.text;
  EXPECT_NE(first.text.find("stopped after step 2 of 5 (--stop-after); continue with --resume auto"),
            std::string::npos)
      << first.text;
  const Output rest = tpipe::testing::sh(run + "--out parts --resume auto --stages 3 --schedule gpipe");
  ASSERT_EQ(rest.status, 0) << rest.text;
  EXPECT_NE(rest.text.find("resumed from parts/step-000002 at step 2 of 5; saved at 2 stages x 1 replica (1f1b, 2 "
                           "micro-batches, partition 3,2), now 3 stages x 1 replica (gpipe, 2 micro-batches, "
                           "partition 2,2,1)"),
            std::string::npos)
      << rest.text;
  const std::vector<double> want = metrics_losses(dir.path + "/straight/metrics.jsonl");
  ASSERT_EQ(want.size(), 5u);
  EXPECT_EQ(metrics_losses(dir.path + "/parts/metrics.jsonl"), want);
  // Another seed is another run: it cannot continue this one.
  const Output other = tpipe::testing::sh(run + "--out parts --resume auto --seed 3");
  EXPECT_EQ(other.status, 1);
  EXPECT_EQ(other.text, "tpipe train-script: --seed 3 differs from the run in parts/step-000005 (0): a resumed run "
                        "needs the same model, data, loss, optimizer, --dtype, --batch-size, --seed and --lr-schedule\n");
}

TEST(TrainScriptCli, BadFlagsAreOneLineEach) {
  if (!python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)";
  const tpipe::testing::TempDir dir;
  ASSERT_EQ(tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 " + kExample).status, 0);
  const std::string run = "cd " + dir.path + " && " TPIPE_BIN " train-script --model model.pt --data data.pt ";
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--dtype float16", "--dtype must be float32 or float64, got 'float16'"},
           {"--lr-schedule linear", "--lr-schedule must be constant or cosine, got 'linear'"},
           {"--optimizer lamb", "--optimizer must be sgd, adam or adamw, got 'lamb'"},
           {"--loss hinge", "unknown loss 'hinge'; known losses: cross_entropy, mse, nll"},
           {"--stages 6", "6 stages are more than the model's 5 layers (its top-level children)"},
           {"--microbatches 6 --dp 2 --stages 1", "a step's 10 rows cannot make 6 micro-batches x 2 replicas (each "
                                                  "needs at least one row)"},
           {"--stop-after 11", "--stop-after 11 is after --steps 10"},
       }) {
    const Output out = tpipe::testing::sh(run + flags);
    EXPECT_EQ(out.status, 1) << flags;
    EXPECT_EQ(out.text, "tpipe train-script: " + message + "\n") << flags;
  }
}

TEST(TrainScriptCli, AMissingModelIsOneLine) {
  const Output out = tpipe::testing::sh(TPIPE_BIN " train-script --model /nonexistent/m.pt --data /nonexistent/d.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train-script: cannot load TorchScript file /nonexistent/m.pt: No such file or directory\n");
}

}  // namespace
