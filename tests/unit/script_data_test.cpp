// Data files of the TorchScript front door. Fixtures are written from C++ with torch::pickle_save,
// the zip format torch.save writes; where Debian's python3-torch is there, Python writes files too.
#include "tpipe/script/script_data.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>

#include "script_fixtures.h"
#include "tpipe/error.h"

namespace tpipe {
namespace {

using namespace script_testing;

TEST(ScriptData, ReadsTupleForm) {
  TempDir dir("tpipe_sdata");
  const auto x = torch::arange(12, torch::kDouble).reshape({4, 3});
  const auto y = torch::tensor({0, 2, 1, 2}, torch::kLong);
  save(c10::ivalue::Tuple::create({x, y}), dir.path + "/d.pt");
  const ScriptData d = load_script_data(dir.path + "/d.pt");
  EXPECT_EQ(d.rows, 4);
  ASSERT_EQ(d.inputs.size(), 1u);
  ASSERT_EQ(d.targets.size(), 1u);
  EXPECT_TRUE(torch::equal(d.inputs[0], x));
  EXPECT_TRUE(torch::equal(d.targets[0], y));
  EXPECT_EQ(d.targets[0].scalar_type(), torch::kLong);
}

TEST(ScriptData, ReadsDictFormWithSeveralInputs) {
  TempDir dir("tpipe_sdata");
  const auto a = torch::arange(6, torch::kFloat).reshape({3, 2});
  const auto b = torch::ones({3, 4, 5}, torch::kDouble);
  const auto t = torch::zeros({3}, torch::kDouble);
  // A dict whose values are a tuple and a tensor needs IValue values: a GenericDict.
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("inputs", c10::ivalue::Tuple::create({a, b}));
  dict.insert("targets", t);
  dict.insert("note", std::string("extra keys are ignored"));
  save(dict, dir.path + "/d.pt");
  const ScriptData d = load_script_data(dir.path + "/d.pt");
  EXPECT_EQ(d.rows, 3);
  ASSERT_EQ(d.inputs.size(), 2u);
  EXPECT_TRUE(torch::equal(d.inputs[0], a));
  EXPECT_TRUE(torch::equal(d.inputs[1], b));
  ASSERT_EQ(d.targets.size(), 1u);

  // A list pair with a list of inputs and a tuple of targets reads alike.
  c10::impl::GenericList pair(c10::AnyType::get());
  pair.push_back(c10::List<at::Tensor>({a, a}));
  pair.push_back(c10::ivalue::Tuple::create({t, t}));
  save(pair, dir.path + "/l.pt");
  const ScriptData l = load_script_data(dir.path + "/l.pt");
  EXPECT_EQ(l.inputs.size(), 2u);
  EXPECT_EQ(l.targets.size(), 2u);
}

TEST(ScriptData, RefusesTensorsWhoseRowsDiffer) {
  TempDir dir("tpipe_sdata");
  const std::string f = dir.path + "/d.pt";
  save(c10::ivalue::Tuple::create(
           {c10::ivalue::Tuple::create({torch::ones({4, 3}), torch::ones({5, 2})}), torch::ones({4})}),
       f);
  EXPECT_EQ(message<ConfigError>([&] { load_script_data(f); }),
            "data file " + f +
                ": inputs[1] has 5 rows (shape [5,2]), inputs[0] has 4 (shape [4,3]); every tensor needs "
                "the same first dimension (the batch)");
  save(c10::ivalue::Tuple::create({torch::ones({4, 3}), torch::ones({3})}), f);
  EXPECT_EQ(message<ConfigError>([&] { load_script_data(f); }),
            "data file " + f +
                ": targets has 3 rows (shape [3]), inputs has 4 (shape [4,3]); every tensor needs the "
                "same first dimension (the batch)");
}

TEST(ScriptData, RefusesWhatIsNotATorchSaveFile) {
  TempDir dir("tpipe_sdata");
  const std::string f = dir.path + "/d.pt";
  EXPECT_EQ(message<ConfigError>([&] { load_script_data(f); }), "data file " + f + " does not exist");
  EXPECT_EQ(message<ConfigError>([&] { load_script_data(dir.path); }),
            "data file " + dir.path + " is a directory, not a file");
  std::ofstream(f) << "x,y\n1,2\n";
  EXPECT_EQ(message<ConfigError>([&] { load_script_data(f); }),
            "data file " + f + " is not a torch.save file (expected the zip format PyTorch >= 1.6 writes)");
  std::ofstream(f, std::ios::binary) << std::string("PK\x03\x04", 4) << "not really a zip archive";
  const std::string m = message<ConfigError>([&] { load_script_data(f); });
  EXPECT_EQ(m.rfind("data file " + f + " is not torch.save data LibTorch can read: ", 0), 0u) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  torch::jit::Module model("Model");
  model.define("def forward(self, x):\n  return x * 2\n");
  model.save(f);
  EXPECT_EQ(
      message<ConfigError>([&] { load_script_data(f); }),
      "data file " + f + " is a TorchScript module, not data; save the data with torch.save((inputs, targets), path)");
}

TEST(ScriptData, RefusesOtherStructures) {
  TempDir dir("tpipe_sdata");
  const std::string f = dir.path + "/d.pt";
  const auto error = [&](const c10::IValue& v) {
    save(v, f);
    return message<ConfigError>([&] { load_script_data(f); });
  };
  const std::string p = "data file " + f;
  const std::string expected = "expected a tuple (inputs, targets) or a dict with keys \"inputs\" and \"targets\"";
  const auto x = torch::ones({2, 2});
  EXPECT_EQ(error(x), p + " holds a tensor; " + expected);
  EXPECT_EQ(error(c10::IValue(7)), p + " holds an int; " + expected);
  EXPECT_EQ(error(c10::ivalue::Tuple::create({x, x, x})), p + " holds a tuple of 3 items; " + expected);
  c10::Dict<std::string, at::Tensor> dict;
  dict.insert("input", x);
  dict.insert("targets", x);
  EXPECT_EQ(error(dict), p + " holds a dict with keys \"input\", \"targets\"; " + expected);
  EXPECT_EQ(error(c10::ivalue::Tuple::create({x, 3.5})),
            p + ": targets is a float, expected a tensor or a tuple of tensors");
  EXPECT_EQ(error(c10::ivalue::Tuple::create({c10::ivalue::Tuple::create({x, c10::IValue()}), x})),
            p + ": inputs[1] is None, expected a tensor");
  EXPECT_EQ(error(c10::ivalue::Tuple::create({c10::ivalue::Tuple::create({}), x})),
            p + ": inputs is empty, expected at least one tensor");
  EXPECT_EQ(error(c10::ivalue::Tuple::create({torch::tensor(1.0), x})),
            p + ": inputs is a 0-dim tensor; every tensor needs the batch as its first dimension");
  EXPECT_EQ(error(c10::ivalue::Tuple::create({torch::ones({0, 3}), torch::ones({0})})),
            p + ": the tensors have 0 rows; expected at least one");
}

TEST(ScriptData, BatchesAreConsecutiveSlicesThatWrapAround) {
  ScriptData d{{torch::arange(5, torch::kLong), torch::arange(10, torch::kLong).reshape({5, 2})},
               {torch::arange(5, torch::kLong) * 10},
               5};
  const auto rows = [](const ScriptData& b) {
    return std::vector<std::int64_t>(b.inputs[0].data_ptr<std::int64_t>(),
                                     b.inputs[0].data_ptr<std::int64_t>() + b.inputs[0].numel());
  };
  EXPECT_EQ(rows(data_batch(d, 2, 0)), (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(rows(data_batch(d, 2, 1)), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(rows(data_batch(d, 2, 2)), (std::vector<std::int64_t>{4, 0}));  // wraps around
  EXPECT_EQ(rows(data_batch(d, 2, 3)), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(rows(data_batch(d, 3, 1)), (std::vector<std::int64_t>{3, 4, 0}));
  EXPECT_EQ(rows(data_batch(d, 2, 1000000000007LL)), (std::vector<std::int64_t>{4, 0}));  // 2e12+14 mod 5 = 4
  const ScriptData b = data_batch(d, 3, 1);
  EXPECT_EQ(b.rows, 3);
  EXPECT_TRUE(torch::equal(b.inputs[1], torch::tensor({6, 7, 8, 9, 0, 1}, torch::kLong).reshape({3, 2})));
  EXPECT_TRUE(torch::equal(b.targets[0], torch::tensor({30, 40, 0}, torch::kLong)));
  for (std::int64_t size : {0, 5}) {
    const ScriptData all = data_batch(d, size, 7);
    EXPECT_EQ(all.rows, 5);
    EXPECT_TRUE(all.inputs[0].is_same(d.inputs[0]));
  }
  EXPECT_EQ(message<ConfigError>([&] { data_batch(d, 6, 0); }),
            "batch size 6 exceeds the data's 5 rows; use at most 5 (0 takes the whole data)");
  EXPECT_EQ(message<ConfigError>([&] { data_batch(d, -1, 0); }),
            "batch size -1 and batch index 0 must not be negative");
}

TEST(ScriptData, ReadsFilesWrittenByPython) {
  if (!python_has_torch()) GTEST_SKIP() << kNoPython;
  TempDir dir("tpipe_sdata");
  std::ofstream(dir.path + "/w.py")
      << "import sys, torch\n"
         "x = torch.arange(12, dtype=torch.float64).reshape(4, 3)\n"
         "w = torch.ones(4, 1, requires_grad=True)\n"
         "big = torch.arange(20, dtype=torch.float32).reshape(10, 2)\n"
         "t = torch.tensor([0, 2, 1, 2])\n"
         "torch.save({'inputs': (x, w, big[3:7]), 'targets': t}, sys.argv[1] + '/dict.pt')\n"
         "torch.save((x, [t, t]), sys.argv[1] + '/tuple.pt')\n"
         "torch.save((x, t), sys.argv[1] + '/legacy.pt', _use_new_zipfile_serialization=False)\n";
  const auto run = testing::sh("/usr/bin/python3 " + dir.path + "/w.py " + dir.path);
  ASSERT_EQ(run.status, 0) << run.text;
  const ScriptData d = load_script_data(dir.path + "/dict.pt");
  EXPECT_EQ(d.rows, 4);
  ASSERT_EQ(d.inputs.size(), 3u);
  EXPECT_TRUE(torch::equal(d.inputs[0], torch::arange(12, torch::kDouble).reshape({4, 3})));
  EXPECT_FALSE(d.inputs[1].requires_grad());
  EXPECT_TRUE(torch::equal(d.inputs[2], torch::arange(6, 14, torch::kFloat).reshape({4, 2})));  // a view at offset 6
  EXPECT_TRUE(torch::equal(d.targets[0], torch::tensor({0, 2, 1, 2}, torch::kLong)));
  const ScriptData t = load_script_data(dir.path + "/tuple.pt");
  EXPECT_EQ(t.inputs.size(), 1u);
  EXPECT_EQ(t.targets.size(), 2u);
  EXPECT_EQ(
      message<ConfigError>([&] { load_script_data(dir.path + "/legacy.pt"); }),
      "data file " + dir.path + "/legacy.pt is not a torch.save file (expected the zip format PyTorch >= 1.6 writes)");
}

}  // namespace
}  // namespace tpipe
