// tpipe train-script against PyTorch, beyond the README's example: tests/cli/script_oracle.py builds
// a model with an embedding (cross_entropy over tokens) and one whose children pass a tuple, scripted
// in float64 on 10 rows; tpipe trains each 5 steps at pp 1, 2 and 3 (gpipe and 1f1b, micro-batches
// not dividing the rows) with SGD-momentum and AdamW and exports it; the same script then trains the
// file in a plain loop and compares. Every step's loss, every trained parameter and the exported
// model's outputs agree within 1e-10 relative (a tensor's largest difference over its largest
// magnitude). Skipped with a message where Python cannot import torch. Also: the one-line messages
// for a model file that is not TorchScript and for models tpipe does not support.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "shell.h"
#include "temp_dir.h"

namespace {

using tpipe::testing::Output;
using tpipe::testing::sh;

const std::string kOracle = "/usr/bin/python3 " TPIPE_SOURCE_DIR "/tests/cli/script_oracle.py";

bool python_has_torch() { return sh("/usr/bin/python3 -c 'import torch'").status == 0; }

// Writes DIR/model.pt and DIR/data.pt of KIND; skips the test (asked only when this fails, importing
// torch takes seconds) where Python has no torch.
#define MAKE_OR_SKIP(dir, kind)                                                                   \
  do {                                                                                            \
    const Output made = sh(kOracle + " make " + (dir) + " " + (kind));                            \
    if (made.status != 0 && !python_has_torch())                                                  \
      GTEST_SKIP() << "Debian's python3-torch is missing (/usr/bin/python3 cannot import torch)"; \
    ASSERT_EQ(made.status, 0) << made.text;                                                       \
  } while (0)

// What script_oracle.py train printed: the losses of its steps, and for each trained file compared,
// the largest relative differences of its parameters (by name) and of its outputs.
struct Oracle {
  std::vector<double> losses;
  std::map<std::string, std::map<std::string, double>> parameters;
  std::map<std::string, double> outputs;
};

// The lines "step N loss X", "FILE parameter NAME X" and "FILE outputs X".
Oracle parse(const std::string& text) {
  Oracle o;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string first, second, name;
    double x = -1;
    words >> first >> second;
    if (first == "step" && words >> name >> x) o.losses.push_back(x);
    if (second == "parameter" && words >> name >> x) o.parameters[first][name] = x;
    if (second == "outputs" && words >> x) o.outputs[first] = x;
  }
  return o;
}

std::vector<double> metrics_losses(const std::string& path) {
  std::ifstream in(path);
  std::vector<double> got;
  for (std::string line; std::getline(in, line);) got.push_back(nlohmann::json::parse(line)["loss"]);
  return got;
}

// Per model and optimizer, tpipe trains three layouts into trained-LAYOUT.pt and run-LAYOUT/; one
// Python run then trains the same file (the loop does not depend on the layout) and compares all three.
TEST(ScriptOracleCli, EmbeddingAndTupleModelsEqualAPlainPyTorchLoop) {
  const std::pair<std::string, std::string> kinds[] = {{"embedding", "cross_entropy"}, {"tuple", "mse"}};
  // The flags of script_oracle.py's two optimizers.
  const std::pair<std::string, std::string> optimizers[] = {
      {"sgd", "--lr 0.1 --momentum 0.9"}, {"adamw", "--optimizer adamw --lr 0.01 --weight-decay 0.1"}};
  // Cut uniformly, the tuple model's tuple crosses a stage boundary at pp 2 and 3.
  const std::pair<std::string, std::string> layouts[] = {{"pp1", "--stages 1 --microbatches 3"},
                                                         {"pp2", "--stages 2 --schedule gpipe --microbatches 3"},
                                                         {"pp3", "--stages 3 --schedule 1f1b --microbatches 4"}};
  for (const auto& [kind, loss] : kinds) {
    const tpipe::testing::TempDir dir;
    MAKE_OR_SKIP(dir.path, kind);
    for (const auto& [optimizer, flags] : optimizers) {
      std::string trained;
      for (const auto& [name, layout] : layouts) {
        SCOPED_TRACE(kind + " " + optimizer + " " + layout);
        const std::string outputs = " --out run-" + name + " --export trained-" + name + ".pt";
        const Output out = sh("cd " + dir.path + " && OPENBLAS_NUM_THREADS=1 " TPIPE_BIN
                              " train-script --model model.pt --data data.pt --loss " + loss + " --steps 5 " + flags +
                              " " + layout + outputs);
        ASSERT_EQ(out.status, 0) << out.text;
        trained += " trained-" + name + ".pt";
      }
      const Output py = sh(kOracle + " train " + dir.path + " " + optimizer + " 5" + trained);
      ASSERT_EQ(py.status, 0) << py.text;
      const Oracle want = parse(py.text);
      ASSERT_EQ(want.losses.size(), 5u) << py.text;
      for (const auto& [name, layout] : layouts) {
        SCOPED_TRACE(kind + " " + optimizer + " " + layout);
        const std::vector<double> got = metrics_losses(dir.path + "/run-" + name + "/metrics.jsonl");
        ASSERT_EQ(got.size(), want.losses.size());
        for (std::size_t s = 0; s < got.size(); ++s)
          EXPECT_NEAR(got[s], want.losses[s], 1e-10 * std::abs(want.losses[s])) << "step " << s + 1;
        const std::string file = "trained-" + name + ".pt";
        ASSERT_EQ(want.parameters.count(file), 1u) << py.text;
        for (const auto& [parameter, d] : want.parameters.at(file)) EXPECT_LE(d, 1e-10) << "parameter " << parameter;
        ASSERT_EQ(want.outputs.count(file), 1u) << py.text;
        EXPECT_LE(want.outputs.at(file), 1e-10) << "the exported model's outputs";
      }
    }
  }
}

TEST(ScriptOracleCli, AModelFileThatIsNotTorchScriptIsOneLine) {
  const tpipe::testing::TempDir dir;
  std::ofstream(dir.path + "/model.pt") << "not a model\n";
  std::ofstream(dir.path + "/data.pt") << "not data either\n";
  const Output out = sh("cd " + dir.path + " && " TPIPE_BIN " train-script --model model.pt --data data.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe train-script: cannot load TorchScript file model.pt: it is not a TorchScript file (not even a zip "
            "archive); save the model with torch.jit.script(model).save(PATH)\n");
}

TEST(ScriptOracleCli, TheDataFileGivenAsTheModelIsOneLine) {
  const tpipe::testing::TempDir dir;
  MAKE_OR_SKIP(dir.path, "embedding");
  const Output out = sh("cd " + dir.path + " && " TPIPE_BIN " train-script --model data.pt --data model.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe train-script: cannot load TorchScript file data.pt: it is a torch.save file (a state_dict or "
            "data?), not TorchScript; save the model with torch.jit.script(model).save(PATH)\n");
}

TEST(ScriptOracleCli, AForwardComputingBetweenChildrenIsOneLine) {
  const tpipe::testing::TempDir dir;
  MAKE_OR_SKIP(dir.path, "arithmetic");
  const Output out = sh("cd " + dir.path + " && " TPIPE_BIN " train-script --model model.pt --data data.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe train-script: cannot use TorchScript file model.pt: the forward of __torch__.Arithmetic computes "
            "aten::mul besides calling its children; supported: an nn.Sequential, or a module whose forward calls "
            "each direct child once, in attribute order, on the previous child's output\n");
}

TEST(ScriptOracleCli, AChildTakingAnIntIsOneLine) {
  const tpipe::testing::TempDir dir;
  MAKE_OR_SKIP(dir.path, "int-arg");
  const Output out = sh("cd " + dir.path + " && " TPIPE_BIN " train-script --model model.pt --data data.pt");
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text,
            "tpipe train-script: cannot use TorchScript file model.pt: child 'repeat' (__torch__.Repeat) takes "
            "'times' of type int, which a payload of tensors cannot give; a layer's forward takes tensors and tuples "
            "of tensors\n");
}

}  // namespace
