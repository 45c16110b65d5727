// `tpipe train` against hostile but fair input: every bad value is refused before any rank starts,
// with one line in the project's words naming the flag or config key; a NaN stops the run at its
// step (or is skipped); an output never overwrites an input; one run at a time writes into --out.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "shell.h"
#include "temp_dir.h"
#include "tpipe/util/files.h"

namespace tpipe::testing {
namespace {

Output tpipe(const std::string& args) { return sh(std::string(TPIPE_BIN) + " " + args); }

void write(const std::string& path, const std::string& content) { std::ofstream(path, std::ios::binary) << content; }

std::string text_of(int n) {
  std::string s;
  for (int i = 0; s.size() < static_cast<std::size_t>(n); ++i) s += "In the beginning line " + std::to_string(i) + ".\n";
  return s.substr(0, n);
}

// Each case: the arguments, and the exact line tpipe train prints (after "tpipe train: ").
void expect_refused(const std::vector<std::pair<std::string, std::string>>& cases) {
  for (const auto& [args, message] : cases) {
    const Output out = tpipe("train " + args);
    EXPECT_EQ(out.status, 1) << args;
    EXPECT_EQ(out.text, "tpipe train: " + message + "\n") << args;
  }
}

TEST(TrainRefuses, NumbersThatAreNotFiniteOrOutOfRange) {
  expect_refused({
      {"--lr inf", "--lr must be a positive number, got inf"},
      {"--lr nan", "--lr must be a positive number, got nan"},
      {"--lr -0.1", "--lr must be a positive number, got -0.1"},
      {"--clip inf", "--clip must be a number >= 0 (0: no clipping), got inf"},
      {"--clip -1", "--clip must be a number >= 0 (0: no clipping), got -1"},
      {"--timeout 0", "--timeout must be a number of seconds in (0, 86400], got 0"},
      {"--timeout nan", "--timeout must be a number of seconds in (0, 86400], got nan"},
      {"--on-nonfinite ignore", "--on-nonfinite must be stop or skip, got 'ignore'"},
      {"--microbatches 0", "--microbatches must be at least 1, got 0"},
      {"--heads 0", "--heads must be at least 1, got 0"},
      {"--seq-len -5", "--seq-len must be at least 1, got -5"},
      {"--virtual-stages -1", "--virtual-stages must be >= 0 (0: the schedule's own)"},
      {"--checkpoint sometimes", "--checkpoint must be always, except_last or never, got 'sometimes'"},
      {"--dropout 1", "--dropout must be a number in [0, 1), got 1"},
      {"--dropout -0.5", "--dropout must be a number in [0, 1), got -0.5"},
      {"--dropout nan", "--dropout must be a number in [0, 1), got nan"},
  });
}

TEST(TrainRefuses, SizesBeyondWhatTheMachineCanRun) {
  expect_refused({
      {"--stages 100000 --dp 100000",
       "--stages 100000 x --dp 100000 = 10000000000 ranks; tpipe train starts at most 256 on one machine"},
      {"--stages 2 --dp 200", "--stages 2 x --dp 200 = 400 ranks; tpipe train starts at most 256 on one machine"},
      {"--schedule 1f1b --virtual-stages 3",
       "the 1f1b schedule runs one stage per rank; for 3 stages per rank use interleaved-1f1b or zb-v"},
      {"--schedule zb-v --virtual-stages 3", "the zb-v schedule runs exactly 2 stages per rank (a V), got 3"},
      {"--schedule interleaved-1f1b --stages 4 --layers 2",
       "8 stages (--stages 4 x 2 per rank) is more than the 6 layers to cut (embed, pos, 2 blocks, ln_f, lm_head); "
       "use fewer stages or more --layers"},
  });
  for (const char* args : {"--seq-len 1000000000", "--dim 400000 --heads 4", "--layers 2000000 --stages 2"}) {
    const Output out = tpipe(std::string("train ") + args);
    EXPECT_EQ(out.status, 1) << args;
    EXPECT_EQ(out.text.rfind("tpipe train: this model and batch need about ", 0), 0u) << out.text;
    EXPECT_NE(out.text.find(" GiB of memory over 2 ranks (weights, gradients, optimizer state and activations), more "
                            "than this machine's "),
              std::string::npos)
        << out.text;
    const std::string tail = " GiB: lower --seq-len, --microbatch-size, --dim or --layers\n";
    EXPECT_EQ(out.text.substr(out.text.size() - tail.size()), tail) << out.text;
  }
}

TEST(TrainRefuses, ConfigValuesOfTheWrongTypeNameTheKey) {
  TempDir dir;
  const std::string cfg = dir.path + "/c.json";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"steps": true})", "config key 'steps' must be an integer, got true"},
      {R"({"lr": "fast"})", "config key 'lr' must be a number, got \"fast\""},
      {R"({"seq_len": 1.5})", "config key 'seq_len' must be an integer, got 1.5"},
      {R"({"seed": -1})", "config key 'seed' must be a non-negative integer, got -1"},
      {R"({"schedule": 3})", "config key 'schedule' must be a string, got 3"},
      {R"({"stages": 3000000000})", "config key 'stages' must be an integer between -2147483648 and 2147483647, got "
                                    "3000000000"},
      {R"({"dp": null})", "config key 'dp' must be an integer, got null"},
      {R"([1, 2])", "the config must be a JSON object of keys (\"seq_len\": 64, ...), got [1,2]"},
      {R"({"lr": 1e999})", "--config " + cfg + " is not valid JSON: number overflow parsing '1e999'"},
      {R"({"lr": 1e300, "clip": -1e300})", "--clip must be a number >= 0 (0: no clipping), got -1e+300"},
      {R"({"seq_len": 64,)", "--config " + cfg + " is not valid JSON: parse error at line 1, column 16: syntax "
                             "error while parsing object key - unexpected end of input; expected string literal"},
      {R"({"stepz": 3})", "unknown key 'stepz' in the config file"},
  };
  for (const auto& [json, message] : cases) {
    write(cfg, json);
    const Output out = tpipe("train --config " + cfg);
    EXPECT_EQ(out.status, 1) << json;
    EXPECT_EQ(out.text, "tpipe train: " + message + "\n") << json;
  }
}

TEST(TrainRefuses, ACorpusThatIsNotTextOrTooShortBeforeAnyRankStarts) {
  TempDir dir;
  const std::string binary = dir.path + "/a.bin", latin1 = dir.path + "/latin1.txt", small = dir.path + "/small.txt";
  write(binary, std::string("abc\0def", 7) + text_of(2000));
  write(latin1, text_of(1500) + "caf\xe9 au lait\n" + text_of(500));
  write(small, text_of(2000));
  expect_refused({
      {"--data " + dir.path, "--data " + dir.path + " is a directory; give a text file"},
      {"--data " + binary,
       "the corpus " + binary + " is not text: a NUL byte (byte 0x00 at offset 3); give a UTF-8 text file"},
      {"--data " + latin1,
       "the corpus " + latin1 + " is not text: not UTF-8 (byte 0xe9 at offset 1503); give a UTF-8 text file"},
      {"--data " + small + " --seq-len 500",
       "--seq-len 500 is longer than the validation text of " + small + " (200 characters)"},
      {"--data /nonexistent/corpus.txt", "cannot read --data /nonexistent/corpus.txt: no such file, or not readable"},
  });
  // Directories where files are expected, and output directories that cannot be made.
  write(dir.path + "/cfg.json", "{}");
  expect_refused({
      {"--config " + dir.path, "--config " + dir.path + " is a directory; give a JSON file"},
      {"--schedule " + dir.path, "the schedule file " + dir.path + " is a directory"},
      {"--checkpoints " + binary + "/ck", "cannot create " + binary + "/ck: Not a directory"},
      {"--out /proc/tpipe-out", "cannot create /proc/tpipe-out: No such file or directory"},
  });
  const Output seed = tpipe("train --seed -1");
  EXPECT_EQ(seed.status, 105);  // CLI11's code for a value its check refuses
  EXPECT_EQ(seed.text, "--seed: a non-negative integer is needed, got -1\nRun with --help for more information.\n");
  // UTF-8 that is not ASCII is text: it passes the checks (--steps 0 then stops it right there).
  write(small, text_of(1000) + "caf\xc3\xa9 \xe2\x82\xac\n" + text_of(1000));
  const Output ok = tpipe("train --data " + small + " --steps 0");
  EXPECT_EQ(ok.text, "tpipe train: --steps must be at least 1, got 0\n");
}

TEST(TrainRefuses, AnOutputThatIsAnInputOrCannotBeWritten) {
  TempDir dir;
  const std::string corpus = dir.path + "/corpus.txt";
  write(corpus, text_of(5000));
  expect_refused({
      {"--data " + corpus + " --metrics " + corpus,
       "--metrics " + corpus + " is the --data file: the run would overwrite its own corpus"},
      {"--data " + corpus + " --out " + dir.path + " --trace " + dir.path + "/../" +
           dir.path.substr(dir.path.rfind('/') + 1) + "/corpus.txt",
       "--trace " + dir.path + "/../" + dir.path.substr(dir.path.rfind('/') + 1) +
           "/corpus.txt is the --data file: the run would overwrite its own corpus"},
      {"--timeline " + dir.path, "--timeline " + dir.path + " is a directory; give a file name"},
      {"--metrics " + corpus + "/m.jsonl",
       "--metrics " + corpus + "/m.jsonl cannot be written: " + corpus + " is not a writable directory"},
      {"--data " + corpus + " --checkpoints " + corpus, "--checkpoints " + corpus + " is the --data file"},
  });
}

TEST(TrainRefuses, ASecondRunIntoTheSameOut) {
  TempDir dir;
  const DirectoryLock held(dir.path, "tpipe train");  // as a run in progress holds it
  const Output out = tpipe("train --steps 1 --out " + dir.path);
  EXPECT_EQ(out.status, 1);
  EXPECT_EQ(out.text, "tpipe train: another tpipe train (pid " + std::to_string(getpid()) + ") is writing to " +
                          dir.path + "; wait for it to end or give this run another directory\n");
}

// A learning rate of 1e30: step 1 is finite, its update makes step 2's loss NaN.
const char* kBlowUp =
    "train --lr 1e30 --optimizer sgd --clip 0 --steps 4 --layers 1 --dim 16 --heads 2 --seq-len 16 --eval-every 100 "
    "--sample-chars 20 --timeline - --trace -";

TEST(NonFiniteDrill, ANanLossStopsTheRunAtItsStepNamingIt) {
  TempDir dir;
  const Output out = tpipe(std::string(kBlowUp) + " --out " + dir.path);
  EXPECT_EQ(out.status, 1) << out.text;
  EXPECT_NE(out.text.find("\n[rank 0] tpipe train: step 2: the loss is nan (micro-batch 0 of replica 0 was the first "
                          "non-finite one); the run stops here, the weights of step 1 intact (--on-nonfinite skip "
                          "skips such steps instead)\n"),
            std::string::npos)
      << out.text;
  EXPECT_EQ(out.text.find("[rank 1] tpipe"), std::string::npos) << "one line, from rank 0:\n" << out.text;
  EXPECT_EQ(out.text.find("json"), std::string::npos) << out.text;
}

TEST(NonFiniteDrill, SkipTrainsOnAndCountsTheSkippedSteps) {
  TempDir dir;
  const Output out = tpipe(std::string(kBlowUp) + " --on-nonfinite skip --out " + dir.path);
  EXPECT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("\nskipped steps     3 with a loss or gradient norm that was not finite (--on-nonfinite "
                          "skip)\n"),
            std::string::npos)
      << out.text;
  EXPECT_NE(out.text.find("(no sample: the model's outputs are not finite)"), std::string::npos) << out.text;
  std::ifstream metrics(dir.path + "/metrics.jsonl");
  int skipped = 0, lines = 0;
  for (std::string line; std::getline(metrics, line);) {
    ++lines;
    const auto j = nlohmann::json::parse(line);
    if (!j.value("skipped", false)) continue;
    ++skipped;
    EXPECT_TRUE(j["loss"].is_null());
  }
  EXPECT_EQ(lines, 4);
  EXPECT_EQ(skipped, 3);
}

}  // namespace
}  // namespace tpipe::testing
