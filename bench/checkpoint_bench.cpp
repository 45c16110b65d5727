// `make bench`, checkpoints: how long PipelineEngine::save and ::load take for the W1 model
// (w1.h, 8 x 1024^2 float32, SGD-momentum) and the demo GPT (tpipe train's default model, AdamW),
// pipelined over 2 ranks (threads of this process), against copying the same bytes with
// `cp -r` + `sync` (a save also flushes every file to disk). Medians of 3, all in one run.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "tpipe/checkpoint/inspect.h"
#include "tpipe/engine.h"
#include "tpipe/models/gpt.h"
#include "w1.h"

namespace {

namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs fn on `world` thread ranks sharing a HashStore; rethrows the first rank's error.
void on_ranks(int world, const std::function<void(tpipe::Communicator&)>& fn) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        tpipe::Communicator comm(r, world, store);
        fn(comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error(e);
}

struct Model {
  std::string name;
  std::vector<tpipe::LayerSpec> layers;
  tpipe::LossFn loss;
  tpipe::OptimizerFactory optimizer;
  tpipe::Payload x, y;
};

Model w1_model() {
  bench::Workload w;
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  return {"W1 (8 x Linear 1024, SGD-momentum)", bench::model(w),
          [](const tpipe::Payload& o, const tpipe::Payload& t) { return bench::loss_fn(o[0], t[0]); },
          [](std::vector<at::Tensor> p) -> std::unique_ptr<torch::optim::Optimizer> {
            return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(1e-3).momentum(0.9));
          },
          {torch::randn({64, w.width}, g)}, {torch::randn({64, w.width}, g)}};
}

Model demo_gpt() {
  tpipe::GptConfig c;  // tpipe train's default model on the Bible's 73 symbols
  c.vocab = 73, c.dim = 128, c.heads = 4, c.layers = 4, c.seq_len = 64;
  auto g = at::make_generator<at::CPUGeneratorImpl>(2);
  return {"demo GPT (4 blocks x 128, AdamW)", tpipe::gpt_layers(c), tpipe::gpt_loss(),
          [](std::vector<at::Tensor> p) -> std::unique_ptr<torch::optim::Optimizer> {
            return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(1e-3));
          },
          {torch::randint(0, c.vocab, {8, c.seq_len}, g, torch::kLong)},
          {torch::randint(0, c.vocab, {8, c.seq_len}, g, torch::kLong)}};
}

void measure(const Model& m, const std::string& tmp) {
  constexpr int kRepeats = 3;
  std::vector<double> save_s, load_s, cp_s;
  on_ranks(2, [&](tpipe::Communicator& comm) {
    tpipe::EngineOptions o;
    o.microbatches = 2;
    tpipe::PipelineEngine engine(m.layers, m.loss, m.optimizer, comm, o);
    engine.train_batch(m.x, m.y);  // so that there is optimizer state
    for (int i = 0; i < kRepeats; ++i) {
      comm.world().all_gather(0, "bench barrier");
      auto t0 = std::chrono::steady_clock::now();
      engine.save(tmp + "/save" + std::to_string(i));
      const double s = seconds_since(t0);
      comm.world().all_gather(0, "bench barrier");
      t0 = std::chrono::steady_clock::now();
      engine.load(tmp + "/save" + std::to_string(i));
      const double l = seconds_since(t0);
      if (comm.rank() == 0) save_s.push_back(s), load_s.push_back(l);
    }
  });
  const auto info = tpipe::checkpoint::inspect_checkpoint(tmp + "/save0");
  for (int i = 0; i < kRepeats; ++i) {
    const std::string dst = tmp + "/cp" + std::to_string(i);
    const auto t0 = std::chrono::steady_clock::now();
    if (std::system(("cp -r " + info.path + " " + dst + " && sync -f " + dst).c_str()) != 0)
      throw std::runtime_error("cp failed");
    cp_s.push_back(seconds_since(t0));
  }
  const double mb = info.bytes / 1e6, save = bench::median(save_s), load = bench::median(load_s),
               cp = bench::median(cp_s);
  std::printf("%-38s %8.1f MB %9.3f s %7.0f MB/s %9.3f s %7.0f MB/s %9.3f s %7.0f MB/s %6.2fx\n", m.name.c_str(), mb,
              save, mb / save, load, mb / load, cp, mb / cp, save / cp);
}

}  // namespace

int main() {
  torch::set_num_threads(1);
  std::string tmpl = fs::temp_directory_path().string() + "/tpipe_ckbench_XXXXXX";
  if (!::mkdtemp(tmpl.data())) return 1;
  std::printf("checkpoints, 2 ranks (pp=2): save and load by the engine against cp -r + sync of the same files\n");
  std::printf("%-38s %11s %11s %12s %11s %12s %11s %12s %7s\n", "model", "bytes", "save", "", "load", "", "cp+sync", "",
              "save/cp");
  try {
    measure(w1_model(), tmpl + "/w1");
    measure(demo_gpt(), tmpl + "/gpt");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fs::remove_all(tmpl);
    return 1;
  }
  fs::remove_all(tmpl);
  return 0;
}
