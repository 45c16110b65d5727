// The end of a step: reductions, the loss and gradient norm on every rank, clipping, the
// optimizer, and the periodic tie audit.
#include <cmath>
#include <sstream>

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
// replica holds the same gradients, so replicas need not wait for each other). The optimizer
// steps only once the loss and the norm are known to be finite, so a NaN changes no weight; both
// are shared by collectives started before (the loss right after each rank's last forward), so
// the wait is for the ranks of this pipeline reaching their STEP.
void PipelineEngine::Impl::optimizer_step() {
  timed_reduce([&] { reducer->finish(); });
  std::vector<at::Tensor> norm{at::full({1}, reducer->local_squared_norm(), at::kDouble)};
  pipe_group->all_reduce_sum_async(norm, "sharing the gradient norm").wait();
  grad_norm = std::sqrt(norm[0].item<double>());
  finish_loss_share();
  if (!std::isfinite(step_loss) || !std::isfinite(grad_norm)) {
    const std::string where = locate_nonfinite();
    for (auto& [name, p] : named_parameters()) p.mutable_grad().reset();
    ++steps_done;
    comm.wait_sends();  // every rank is at its STEP: what it sent has been received
    if (!opts.skip_nonfinite)
      throw NonFiniteError(Where{comm.rank()}.prefix() + "step " + std::to_string(steps_done) + ": " + where);
    skipped = true;
    return;
  }
  if (opts.clip_grad_norm) {
    // As torch::nn::utils::clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
    const double coef = *opts.clip_grad_norm / (grad_norm + 1e-6);
    if (coef < 1.0) reducer->scale_gradients(coef);
  }
  if (optimizer) optimizer->step();
  ++steps_done;
  if (opts.tie_audit_every > 0 && steps_done % opts.tie_audit_every == 0) audit_ties();
}

// Every rank says what it saw (the last stage: the first micro-batch with a non-finite loss;
// every rank: whether its gradients are finite), so all ranks throw the same message.
std::string PipelineEngine::Impl::locate_nonfinite() {
  const std::string mine = std::to_string(nonfinite_mb) + " " +
                           (std::isfinite(reducer->local_squared_norm()) ? "1" : "0");
  const auto all = comm.world().all_gather_text(mine, "locating a non-finite loss or gradient");
  auto number = [](double x) {
    if (std::isnan(x)) return std::string("nan");  // not "-nan": the sign of a NaN means nothing here
    std::ostringstream s;
    s << x;
    return s.str();
  };
  std::string loss_at, grads_at;
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    std::istringstream in(all[r]);
    int mb = -1, finite = 1;
    in >> mb >> finite;
    const std::string copy = stages_text(topo.position_of(r)) + " of replica " + std::to_string(topo.replica_of(r));
    if (mb >= 0 && loss_at.empty()) loss_at = "micro-batch " + std::to_string(mb) + " of replica " +
                                              std::to_string(topo.replica_of(r)) + " was the first non-finite one";
    if (!finite) grads_at += (grads_at.empty() ? "" : ", ") + copy;
  }
  if (!std::isfinite(step_loss))
    return "the loss is " + number(step_loss) + (loss_at.empty() ? "" : " (" + loss_at + ")");
  return "the gradient norm is " + number(grad_norm) +
         (grads_at.empty() ? "" : " (non-finite gradients on " + grads_at + ")");
}

}  // namespace tpipe
