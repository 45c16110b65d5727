// The end of a step: reductions, the loss and gradient norm on every rank, clipping, the
// optimizer, and the periodic tie audit.
#include <cmath>

#include <ATen/ATen.h>

#include "engine_impl.h"

namespace tpipe {

// One all-reduce over the world gives every rank the global loss (the last stages' weighted
// sums, one per replica) and the squared global gradient norm (replica 0's stages only: after
// the reductions every replica holds the same gradients).
void PipelineEngine::Impl::share_loss(bool with_norm) {
  const double loss_part = stage->is_last() ? loss_sum : 0.0;
  const double norm_part = with_norm && replica == 0 ? reducer->local_squared_norm() : 0.0;
  std::vector<at::Tensor> v{at::tensor({loss_part, norm_part}, at::kDouble)};
  comm.world().all_reduce_sum(v, "sharing the loss");
  step_loss = v[0][0].item<double>();
  grad_norm = std::sqrt(v[0][1].item<double>());
}

void PipelineEngine::Impl::optimizer_step() {
  comm.wait_sends();
  timed_reduce([&] { reducer->finish(); });
  share_loss(true);
  // As torch::nn::utils::clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
  if (opts.clip_grad_norm) {
    const double coef = *opts.clip_grad_norm / (grad_norm + 1e-6);
    if (coef < 1.0) reducer->scale_gradients(coef);
  }
  if (optimizer) optimizer->step();
  ++steps_done;
  if (opts.tie_audit_every > 0 && steps_done % opts.tie_audit_every == 0) {
    reducer->audit_ties(comm.rank(), stage->index(), topo);
  }
}

}  // namespace tpipe
