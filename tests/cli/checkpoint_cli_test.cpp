// Durable runs, end to end through `tpipe train` processes:
// - crash drill: SIGKILL of one rank mid-run (after a save, while later ones are written) ends
//   every process with an error naming the rank; --resume auto then finishes the run with
//   weights bitwise equal to an uninterrupted run, and metrics without duplicate steps;
// - --stop-after then --resume auto equals the uninterrupted run too;
// - `tpipe checkpoint info` finds damage; `export` writes a file Python's torch.load reads.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoints.h"
#include "shell.h"
#include "temp_dir.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/checkpoint/tensor_file.h"

namespace {

namespace fs = std::filesystem;
using tpipe::testing::Output;
using tpipe::testing::sh;


Output tpipe(const std::string& args) { return sh(std::string(TPIPE_BIN) + " " + args); }


// A small GPT, two stages, a checkpoint every 5 steps.
std::string train_flags(const std::string& out, int steps = 40) {
  return "train --layers 2 --dim 32 --heads 2 --seq-len 16 --microbatch-size 2 --microbatches 2 --stages 2 --steps " +
         std::to_string(steps) + " --eval-every 20 --sample-chars 0 --save-every 5 --out " + out;
}


void expect_bitwise_equal(const std::string& a_dir, const std::string& b_dir) {
  const auto a = tpipe::testing::checkpoint_tensors(a_dir), b = tpipe::testing::checkpoint_tensors(b_dir);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name << " differs";
  }
}

std::vector<int> metric_steps(const std::string& path) {
  std::ifstream in(path);
  std::vector<int> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line)["step"]);
  return steps;
}

std::vector<int> one_to(int n) {
  std::vector<int> v;
  for (int i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

// The pid of the process whose parent is `parent` and whose environment has RANK=`rank`.
pid_t rank_pid(pid_t parent, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string pid, comm, state;
    long ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream env(e.path() / "environ");
    const std::string all = std::string(1, '\0') + std::string((std::istreambuf_iterator<char>(env)),
                                                                std::istreambuf_iterator<char>());
    if (all.find(std::string("\0RANK=", 6) + std::to_string(rank) + '\0') != std::string::npos)
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

TEST(CheckpointCli, CrashDrillKillsARankAndResumeAutoEndsBitwiseEqual) {
  const tpipe::testing::TempDir straight, crashed;
  const auto ok = tpipe(train_flags(straight.path));
  ASSERT_EQ(ok.status, 0) << ok.text;

  // The run to crash, with its output in a file; rank 1 is killed once step 10 is saved, as
  // soon as a later save is under way (or 2 s later).
  const std::string log = crashed.path + "/log.txt";
  const pid_t launcher = fork();
  if (launcher == 0) {
    const std::string cmd = std::string(TPIPE_BIN) + " " + train_flags(crashed.path, 400) + " > " + log + " 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    _exit(127);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto waited = [&] { return std::chrono::steady_clock::now() - t0; };
  while (!exists(crashed.path + "/step-000010/manifest.json") && waited() < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(exists(crashed.path + "/step-000010/manifest.json")) << "no checkpoint of step 10 after 120 s";
  const auto t1 = std::chrono::steady_clock::now();
  bool during_save = false;
  while (std::chrono::steady_clock::now() - t1 < std::chrono::seconds(2)) {
    for (const auto& e : fs::directory_iterator(crashed.path))
      during_save = during_save || e.path().filename().string().rfind(".partial-", 0) == 0;
    if (during_save) break;
  }
  const pid_t victim = rank_pid(launcher, 1);
  ASSERT_GT(victim, 0) << "rank 1 not found";
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  int status = 0;
  waitpid(launcher, &status, 0);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;
  EXPECT_NE(text.find("rank 1"), std::string::npos) << text;
  std::cout << "killed rank 1 " << (during_save ? "while a checkpoint was being written" : "between saves") << "\n";

  // What is on disk is whole: the newest complete checkpoint verifies.
  const auto info = tpipe("checkpoint info " + crashed.path);
  EXPECT_EQ(info.status, 0) << info.text;

  const auto resumed = tpipe(train_flags(crashed.path, 400) + " --resume auto --stop-after 40");
  ASSERT_EQ(resumed.status, 0) << resumed.text;
  EXPECT_NE(resumed.text.find("resumed from " + crashed.path + "/step-0000"), std::string::npos) << resumed.text;
  // The straight run had --steps 40, this one --steps 400 (stopped at 40): the learning rates
  // differ, so compare with a straight run of the same schedule.
  const tpipe::testing::TempDir straight400;
  const auto ok400 = tpipe(train_flags(straight400.path, 400) + " --stop-after 40");
  ASSERT_EQ(ok400.status, 0) << ok400.text;
  expect_bitwise_equal(straight400.path + "/step-000040", crashed.path + "/step-000040");
  EXPECT_EQ(metric_steps(crashed.path + "/metrics.jsonl"), one_to(40));
}

TEST(CheckpointCli, StopAfterThenResumeAutoEqualsTheStraightRun) {
  const tpipe::testing::TempDir straight, split;
  ASSERT_EQ(tpipe(train_flags(straight.path, 20)).status, 0);
  const auto first = tpipe(train_flags(split.path, 20) + " --stop-after 7 --keep 1");
  ASSERT_EQ(first.status, 0) << first.text;
  EXPECT_NE(first.text.find("stopped after step 7 of 20 (--stop-after); continue with --resume auto"),
            std::string::npos)
      << first.text;
  EXPECT_EQ(fs::path(tpipe::checkpoint::read_manifest(split.path + "/step-000007").layers.at(0).name), "embed");
  const auto second = tpipe(train_flags(split.path, 20) + " --resume auto");
  ASSERT_EQ(second.status, 0) << second.text;
  EXPECT_NE(second.text.find("resumed from " + split.path + "/step-000007 at step 7 of 20; saved at 2 stages x 1 "
                                                            "replica (1f1b, 2 micro-batches, partition 3,3), now 2 "
                                                            "stages x 1 replica (1f1b, 2 micro-batches, partition 3,3)"),
            std::string::npos)
      << second.text;
  expect_bitwise_equal(straight.path + "/step-000020", split.path + "/step-000020");
  EXPECT_EQ(metric_steps(split.path + "/metrics.jsonl"), one_to(20));
  // The report's curves go on through the resume: one run of 20 steps.
  std::ifstream page_file(split.path + "/report.html");
  const std::string page((std::istreambuf_iterator<char>(page_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("steps 1 to 20 "), std::string::npos);

  // A resume that would not continue the same run is refused before any rank starts.
  const auto more = tpipe("train --layers 2 --dim 32 --heads 2 --seq-len 16 --steps 30 --resume " + split.path +
                          "/step-000015 --out " + split.path);
  EXPECT_EQ(more.status, 1);
  EXPECT_EQ(more.text, "tpipe train: --steps 30 differs from the run in " + split.path +
                           "/step-000015 (20 steps): its warm-up and cosine learning-rate schedule are functions of "
                           "--steps; resume with --steps 20, or start a new run\n");
}

TEST(CheckpointCli, InfoFindsDamageAndExportIsReadByTorchLoad) {
  const tpipe::testing::TempDir run;
  ASSERT_EQ(tpipe(train_flags(run.path, 10) + " --stop-after 5").status, 0);
  const std::string dir = run.path + "/step-000005";
  const auto good = tpipe("checkpoint info " + run.path);
  EXPECT_EQ(good.status, 0) << good.text;
  EXPECT_NE(good.text.find("checkpoint   " + dir + " (format version 1)\nstep         5\n"), std::string::npos)
      << good.text;
  EXPECT_NE(good.text.find("valid        yes"), std::string::npos) << good.text;

  const std::string out = run.path + "/model.pt";
  const auto exported = tpipe("checkpoint export " + run.path + " " + out);
  ASSERT_EQ(exported.status, 0) << exported.text;
  EXPECT_EQ(exported.text, "wrote " + out + ": 28 tensors\n");

  if (sh("/usr/bin/python3 -c 'import torch'").status != 0) {
    GTEST_SKIP() << "Debian's python3-torch is not installed (/usr/bin/python3 cannot import torch): the "
                    "torch.load check is skipped; `apt-get install python3-torch` runs it";
  }
  // Python reads the exported dict and a layer file; the sums match what LibTorch reads.
  const auto py = sh("/usr/bin/python3 -c \"import torch\nd = torch.load('" + out +
                     "')\nl = torch.load('" + dir + "/layers/block0.pt')\nprint(len(d), sorted(d)[0], "
                     "'%.17g' % d['wte.weight'].double().sum().item(), '%.17g' % l['attn.qkv.weight'].double().sum()"
                     ".item())\"");
  ASSERT_EQ(py.status, 0) << py.text;
  const auto m = tpipe::checkpoint::read_manifest(dir);
  const auto wte = tpipe::checkpoint::read_tensors(dir, "layers/wte.pt", m.files.at("layers/wte.pt"));
  const auto b0 = tpipe::checkpoint::read_tensors(dir, "layers/block0.pt", m.files.at("layers/block0.pt"));
  char want[256];
  std::snprintf(want, sizeof want, "28 block0.attn.proj.bias %.17g %.17g\n",
                wte.at(0).second.to(at::kDouble).sum().item<double>(), b0.at(2).second.to(at::kDouble).sum().item<double>());
  EXPECT_EQ(py.text, want);

  // A damaged file: info says which and exits 1.
  {
    std::fstream f(dir + "/layers/ln_f.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  const auto bad = tpipe("checkpoint info " + dir);
  EXPECT_EQ(bad.status, 1) << bad.text;
  EXPECT_NE(bad.text.find("valid        NO:\n  layers/ln_f.pt: damaged (SHA-256 differs from the manifest's)"),
            std::string::npos)
      << bad.text;
  // A resume from it is refused before any rank starts.
  const auto resume = tpipe(train_flags(run.path, 10) + " --resume " + run.path);
  EXPECT_EQ(resume.status, 1);
  EXPECT_EQ(resume.text, "tpipe train: checkpoint " + dir +
                             " is damaged: layers/ln_f.pt: damaged (SHA-256 differs from the manifest's) (`tpipe "
                             "checkpoint info " + dir + "` lists every file)\n");
}

}  // namespace
