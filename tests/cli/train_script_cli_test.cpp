// tpipe train-script against PyTorch itself: Python (Debian's python3-torch) defines a model,
// scripts it in float64, writes a batch and trains it in a plain loop; tpipe trains the same files
// pipelined. Losses and the exported model's outputs agree within 1e-10. Skipped with a message
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

// Writes model.pt, data.pt; trains 5 steps with `optimizer`, printing each loss; saves
// python_trained.pt. compare.py prints the largest relative difference of two models' outputs.
const char* kMake = R"(import sys, torch
torch.manual_seed(0)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(4, 16)
        self.act = torch.nn.Tanh()
        self.ln = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, 3)
    def forward(self, x):
        return self.out(self.fc(self.ln(self.act(self.emb(x)))))
torch.jit.script(Net().double()).save("model.pt")
x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
torch.save((x, y), "data.pt")
m = torch.jit.load("model.pt")
if sys.argv[1] == "sgd":
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
else:
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
for step in range(5):
    opt.zero_grad(); loss = torch.nn.functional.mse_loss(m(x), y); loss.backward(); opt.step()
    print(repr(loss.item()))
torch.jit.save(m, "python_trained.pt")
)";
const char* kCompare = R"(import sys, torch
a, b = torch.jit.load(sys.argv[1]), torch.jit.load(sys.argv[2])
x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
print(((a(x) - b(x)).abs().max() / b(x).abs().max()).item())
)";

bool python_has_torch() { return tpipe::testing::sh("/usr/bin/python3 -c 'import torch'").status == 0; }

std::vector<double> numbers(const std::string& text) {
  std::vector<double> v;
  std::istringstream in(text);
  for (double x; in >> x;) v.push_back(x);
  return v;
}

TEST(TrainScriptCli, EqualsAPlainPyTorchLoop) {
  if (!python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)";
  for (const auto& [optimizer, flags] : {std::pair<std::string, std::string>{"sgd", "--lr 0.1 --momentum 0.9"},
                                         {"adamw", "--optimizer adamw --lr 0.01 --weight-decay 0.1"}}) {
    for (const char* layout : {"--stages 2 --schedule gpipe --microbatches 3", "--stages 3 --schedule 1f1b "
                                                                                "--microbatches 4"}) {
      SCOPED_TRACE(optimizer + " " + layout);
      const tpipe::testing::TempDir dir;
      std::ofstream(dir.path + "/make.py") << kMake;
      std::ofstream(dir.path + "/compare.py") << kCompare;
      const Output py = tpipe::testing::sh("cd " + dir.path + " && /usr/bin/python3 make.py " + optimizer);
      ASSERT_EQ(py.status, 0) << py.text;
      const std::vector<double> want = numbers(py.text);
      ASSERT_EQ(want.size(), 5u) << py.text;
      const Output out = tpipe::testing::sh("cd " + dir.path + " && OPENBLAS_NUM_THREADS=1 " TPIPE_BIN
                                            " train-script --model model.pt --data data.pt --loss mse --steps 5 " +
                                            flags + " " + layout + " --out run --export trained.pt");
      ASSERT_EQ(out.status, 0) << out.text;
      std::ifstream metrics(dir.path + "/run/metrics.jsonl");
      std::vector<double> got;
      for (std::string line; std::getline(metrics, line);) got.push_back(nlohmann::json::parse(line)["loss"]);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(got[s], want[s], 1e-10 * want[s]) << "step " << s;
      const Output diff = tpipe::testing::sh("cd " + dir.path +
                                             " && /usr/bin/python3 compare.py trained.pt python_trained.pt");
      ASSERT_EQ(diff.status, 0) << diff.text;
      EXPECT_LE(numbers(diff.text).at(0), 1e-10) << "the exported model's outputs";
    }
  }
}

TEST(TrainScriptCli, AMissingModelIsOneLine) {
  const Output out = tpipe::testing::sh(TPIPE_BIN " train-script --model /nonexistent/m.pt --data /nonexistent/d.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train-script: cannot load TorchScript file /nonexistent/m.pt: No such file or directory\n");
}

}  // namespace
