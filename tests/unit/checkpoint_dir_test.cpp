// Checkpoint directories and manifests without LibTorch: naming, which checkpoint a root
// resolves to, publishing over an older one, pruning with --keep, leftovers of a crash, and
// manifests that are damaged or newer than this tpipe.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "temp_dir.h"
#include "tpipe/checkpoint/directory.h"
#include "tpipe/checkpoint/manifest.h"
#include "tpipe/error.h"
#include "tpipe/util/sha256.h"

namespace tpipe::checkpoint {
namespace {

namespace fs = std::filesystem;

struct Root : tpipe::testing::TempDir {
  Root() : TempDir("tpipe_ckdir") {}
  // A complete checkpoint directory (a manifest of that step) or an incomplete one.
  std::string make(const std::string& name, bool complete = true) const {
    fs::create_directories(path + "/" + name);
    if (complete) {
      Manifest m;
      std::ofstream(path + "/" + name + "/manifest.json") << to_json(m).dump();
    }
    return path + "/" + name;
  }
};

std::vector<std::string> names(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(fs::path(p).filename().string());
  return out;
}

TEST(CheckpointDir, NamesSortByStep) {
  EXPECT_EQ(step_dir_name(600), "step-000600");
  EXPECT_EQ(step_dir_name(1234567), "step-1234567");
  EXPECT_EQ(partial_dir_name(5), ".partial-step-000005");
  Root r;
  r.make("step-000010");
  r.make("step-000005");
  r.make("step-1234567");
  r.make("step-000020", false);  // no manifest: not complete
  r.make("step-abc");
  r.make(".partial-step-000030");
  EXPECT_EQ(names(complete_checkpoints(r.path)),
            (std::vector<std::string>{"step-000005", "step-000010", "step-1234567"}));
  EXPECT_TRUE(complete_checkpoints(r.path + "/missing").empty());
}

TEST(CheckpointDir, ResolvesLatestThenNewestAndSaysWhenThereIsNone) {
  Root r;
  EXPECT_THROW(
      {
        try {
          resolve_checkpoint(r.path);
        } catch (const ConfigError& e) {
          EXPECT_EQ(std::string(e.what()), "no checkpoint in " + r.path +
                                                ": it has neither a manifest.json nor a complete step-NNNNNN "
                                                "checkpoint directory");
          throw;
        }
      },
      ConfigError);
  EXPECT_THROW(resolve_checkpoint(r.path + "/nope"), ConfigError);
  r.make("step-000005");
  r.make("step-000010");
  EXPECT_EQ(resolve_checkpoint(r.path), r.path + "/step-000010");  // no latest: the newest
  std::ofstream(r.path + "/latest") << "step-000005\n";
  EXPECT_EQ(resolve_checkpoint(r.path), r.path + "/step-000005");  // latest wins
  EXPECT_EQ(resolve_checkpoint(r.path + "/step-000010"), r.path + "/step-000010");
  std::ofstream(r.path + "/latest") << "step-000099\n";  // names one that is gone
  EXPECT_EQ(resolve_checkpoint(r.path), r.path + "/step-000010");
}

TEST(CheckpointDir, PublishReplacesAnOlderCheckpointOfTheSameStepAndMovesLatest) {
  Root r;
  r.make("step-000005");
  const std::string partial = r.make(".partial-step-000005");
  std::ofstream(partial + "/new") << "x";
  publish_checkpoint(partial, r.path, "step-000005");
  EXPECT_TRUE(fs::exists(r.path + "/step-000005/new"));
  EXPECT_FALSE(fs::exists(partial));
  std::ifstream in(r.path + "/latest");
  std::string latest;
  std::getline(in, latest);
  EXPECT_EQ(latest, "step-000005");
  EXPECT_EQ(std::distance(fs::directory_iterator(r.path), fs::directory_iterator()), 2);  // step-000005, latest
}

TEST(CheckpointDir, KeepRemovesTheOldestUpToLatest) {
  Root r;
  for (const char* n : {"step-000005", "step-000010", "step-000015", "step-000020", "step-000600"}) r.make(n);
  std::ofstream(r.path + "/latest") << "step-000020\n";  // step-000600: an earlier, longer run
  EXPECT_EQ(names(prune_checkpoints(r.path, 0)), std::vector<std::string>{});
  EXPECT_EQ(names(prune_checkpoints(r.path, 2)), (std::vector<std::string>{"step-000005", "step-000010"}));
  EXPECT_EQ(names(complete_checkpoints(r.path)),
            (std::vector<std::string>{"step-000015", "step-000020", "step-000600"}));
  EXPECT_EQ(names(prune_checkpoints(r.path, 1)), std::vector<std::string>{"step-000015"});
  std::ofstream(r.path + "/latest") << "gone\n";  // no latest: the newest count
  EXPECT_EQ(names(prune_checkpoints(r.path, 1)), std::vector<std::string>{"step-000020"});
}

TEST(CheckpointDir, LeftoversOfACrashAreRemoved) {
  Root r;
  r.make(".partial-step-000010");
  r.make(".removing-step-000005");
  r.make("step-000005");
  remove_partials(r.path);
  EXPECT_EQ(std::distance(fs::directory_iterator(r.path), fs::directory_iterator()), 1);
}

TEST(Manifest, RoundTripsAndNamesWhatIsWrong) {
  Manifest m;
  m.step = 42;
  m.layout = {2, 3, {4, 5}, "1f1b", 8};
  m.optimizer = "AdamW";
  m.layers = {{"embed", "wte"}, {"block0", ""}, {"lm_head", "wte"}};
  m.modules["wte"] = {"layers/wte.pt", "optimizer/wte.pt", {{"weight", {96, 64}, "Float"}}, {}};
  m.modules["block0"] = {"layers/block0.pt", "", {{"w", {3}, "Double"}}, {{"running", {3}, "Double"}}};
  m.files["layers/wte.pt"] = {123, "ab"};
  m.extra = R"({"steps":600})";
  const Manifest back = manifest_from_json(to_json(m), "m.json");
  EXPECT_EQ(to_json(back), to_json(m));
  EXPECT_EQ(back.modules.at("block0").buffers[0].name, "running");
  EXPECT_EQ(describe(back.modules.at("wte").parameters[0]), "Float [96,64]");

  auto error = [](const nlohmann::json& j) {
    try {
      manifest_from_json(j, "DIR/manifest.json");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto j = to_json(m);
  j.erase("step");
  EXPECT_EQ(error(j), "DIR/manifest.json is damaged: key 'step' not found");
  j = to_json(m);
  j["layers"][1].erase("name");
  j["layers"][1]["tie"] = "nothing";
  EXPECT_EQ(error(j), "DIR/manifest.json is damaged: key 'name' not found");
  j = to_json(m);
  j["layers"].push_back({{"name", "x"}});
  EXPECT_EQ(error(j), "DIR/manifest.json is damaged: layer 'x' refers to module 'x', which it does not list");
  j = to_json(m);
  j["version"] = 7;
  EXPECT_EQ(error(j), "DIR/manifest.json was written by a newer tpipe: checkpoint format version 7, this tpipe reads "
                      "version 1 and older");
  EXPECT_EQ(error(nlohmann::json::array()), "DIR/manifest.json is not a tpipe checkpoint manifest (no \"format\": "
                                            "\"tpipe-checkpoint\")");
}

TEST(Manifest, FileStemsAreSafe) {
  EXPECT_EQ(file_stem("block0.attn"), "block0.attn");
  EXPECT_EQ(file_stem("../etc/passwd"), "%2E.%2Fetc%2Fpasswd");
  EXPECT_EQ(file_stem("a b"), "a%20b");
  EXPECT_EQ(file_stem(""), "%");
}

TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace tpipe::checkpoint
