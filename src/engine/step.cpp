// The end of a step: reductions, the loss and gradient norm on every rank, clipping, the
// optimizer, and the periodic tie audit.
#include <cmath>

#include <ATen/ATen.h>

#include "engine_impl.h"

namespace tpipe {

// The loss is shared by one all-reduce over the world, started by every rank right after its last
// forward (when the last stages know their part), so it is complete long before anyone waits for
// it at the end of the step: sharing the loss makes no rank wait for another.
void PipelineEngine::Impl::start_loss_share() {
  loss_share = {at::full({1}, holds_last() ? loss_sum : 0.0, at::kDouble)};
  loss_op = comm.world().all_reduce_sum_async(loss_share, "sharing the loss");
}

void PipelineEngine::Impl::finish_loss_share() {
  loss_op.wait();
  step_loss = loss_share[0].item<double>();
}

// The global gradient norm over this replica's pipeline (after the data-parallel reduction every
// replica holds the same gradients, so replicas need not wait for each other). With clipping the
// optimizer needs it first; without, it is waited for only after the optimizer has run.
void PipelineEngine::Impl::optimizer_step() {
  timed_reduce([&] { reducer->finish(); });
  std::vector<at::Tensor> norm{at::full({1}, reducer->local_squared_norm(), at::kDouble)};
  AsyncOp norm_op = pipe_group->all_reduce_sum_async(norm, "sharing the gradient norm");
  if (opts.clip_grad_norm) {
    norm_op.wait();
    grad_norm = std::sqrt(norm[0].item<double>());
    // As torch::nn::utils::clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
    const double coef = *opts.clip_grad_norm / (grad_norm + 1e-6);
    if (coef < 1.0) reducer->scale_gradients(coef);
  }
  if (optimizer) optimizer->step();
  norm_op.wait();
  grad_norm = std::sqrt(norm[0].item<double>());
  ++steps_done;
  if (opts.tie_audit_every > 0 && steps_done % opts.tie_audit_every == 0) {
    audit_ties();
  }
}

}  // namespace tpipe
