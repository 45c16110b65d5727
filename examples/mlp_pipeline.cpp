// A first pipeline: an MLP cut into as many stages as there are ranks, trained on synthetic
// data. Run it with two ranks:
//
//   tpipe run -n 2 -- ./mlp_pipeline --steps 30
//
// Each rank builds only its own layers, the engine splits every batch into micro-batches, and
// the loss printed is the same on every rank (rank 0 prints it). With --dp 2 and 4 ranks, two
// pipelines of two stages each train on halves of every batch and average their gradients.
// --save DIR keeps a checkpoint at the end; --resume DIR continues from one, at any layout:
//
//   tpipe run -n 2 -- ./mlp_pipeline --steps 30 --save ckpt
//   tpipe run -n 3 -- ./mlp_pipeline --steps 60 --resume ckpt      # steps 31..60 on 3 stages
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>

#include "tpipe/engine.h"
#include "tpipe/report.h"

int main(int argc, char** argv) {
  CLI::App app{"Train an MLP pipelined across the ranks started by `tpipe run`"};
  int steps = 60, batch = 256, width = 256, depth = 6;
  tpipe::EngineOptions options;
  options.microbatches = 8;
  app.add_option("--steps", steps, "training steps")->capture_default_str();
  app.add_option("--batch", batch, "samples per mini-batch")->capture_default_str();
  app.add_option("--width", width, "hidden width")->capture_default_str();
  app.add_option("--depth", depth, "hidden layers")->capture_default_str();
  app.add_option("--schedule", options.schedule, "naive | gpipe | 1f1b")->capture_default_str();
  app.add_option("--microbatches", options.microbatches, "micro-batches per mini-batch")->capture_default_str();
  app.add_option("--dp", options.dp, "data-parallel replicas (ranks = stages x dp)")->capture_default_str();
  tpipe::ReportOptions report_options;
  app.add_option("--trace", report_options.trace_path, "write a Chrome/Perfetto trace of the last steps to FILE");
  app.add_option("--timeline", report_options.timeline_path, "write an SVG timeline of the last step to FILE");
  app.add_option("--metrics", report_options.metrics_path, "append one JSON line of metrics per step to FILE");
  std::string save_dir, resume_dir;
  app.add_option("--save", save_dir, "save a checkpoint into DIR at the end (DIR/step-NNNNNN)");
  app.add_option("--resume", resume_dir, "continue from a checkpoint (DIR or DIR/step-NNNNNN)");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);

  try {
    // 1. Join the job: rank and world size come from `tpipe run` (or torchrun).
    auto comm = tpipe::Communicator::from_env();

    // 2. The model as a list of layer specs; each rank builds only the layers of its stage.
    std::vector<tpipe::LayerSpec> layers;
    layers.push_back(tpipe::layer("in", [=] { return torch::nn::Linear(16, width); }));
    for (int i = 0; i < depth; ++i)
      layers.push_back(tpipe::layer("hidden" + std::to_string(i), [=] {
        return torch::nn::Sequential(torch::nn::Linear(width, width), torch::nn::Tanh());
      }));
    layers.push_back(tpipe::layer("out", [=] { return torch::nn::Linear(width, 1); }));

    auto loss = [](const tpipe::Payload& out, const tpipe::Payload& target) {
      return torch::mse_loss(out[0], target[0]);
    };
    auto adam = [](std::vector<at::Tensor> params) -> std::unique_ptr<torch::optim::Optimizer> {
      return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(3e-3));
    };
    options.layer_seed = 42;  // the same initial weights however the model is cut
    report_options.title = "mlp_pipeline · " + options.schedule + " · " + std::to_string(options.microbatches) +
                           " micro-batches";
    tpipe::Reporter report(report_options);
    options.record = report.needs_recording();  // every rank records; rank 0 writes the files
    tpipe::PipelineEngine engine(layers, loss, adam, *comm, options);
    if (comm->rank() == 0)
      std::cout << "stages " << engine.num_stages() << " x replicas " << options.dp << " (layers per stage "
                << to_string(engine.partition()) << "), schedule " << options.schedule << ", "
                << options.microbatches << " micro-batches per replica\n";

    // 3. Synthetic regression data: a fixed smooth function of 16 inputs. Only the first stage
    //    needs the inputs and only the last the targets; every rank draws both to stay in step.
    torch::manual_seed(0);
    const auto teacher = torch::randn({16, 1}) / 4;  // a smooth target a small MLP can learn
    // 4. A checkpoint brings back the weights, Adam's moments, the step and (on the same layout)
    //    the generator the batches are drawn from.
    if (!resume_dir.empty()) {
      const auto info = engine.load(resume_dir);
      if (comm->rank() == 0)
        std::cout << "resumed from " << info.path << " at step " << info.step
                  << (info.rng_restored ? "" : " (saved at another layout: the batches are drawn afresh)") << "\n";
    }
    for (int step = static_cast<int>(engine.step()) + 1; step <= steps; ++step) {
      const auto x = torch::randn({batch, 16});
      const auto y = torch::sin(x.matmul(teacher));
      const auto r = engine.train_batch({x}, {y});
      report.on_step(engine, r, {batch});
      if (comm->rank() == 0 && (step == 1 || step % 5 == 0 || step == steps)) {
        std::printf("step %3d  loss %.5f  activations on stage 0: %.1f KiB at most (measured)\n", step,
                    r.loss, r.activation_peak_bytes / 1024.0);
        std::fflush(stdout);
      }
    }
    report.finish(engine);
    if (!save_dir.empty()) {
      const auto info = engine.save(save_dir);
      if (comm->rank() == 0) std::cout << "saved " << info.path << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
