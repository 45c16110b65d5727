// A Stage: the consecutive layers one rank owns, run one micro-batch at a time. Forward keeps
// what backward needs (the "stash": the micro-batch's input and output tensors and the autograd
// graph behind them) until that micro-batch's backward frees it. Backward seeds autograd with
// the gradients of the stage's outputs and returns those of its inputs, for the previous stage.
//
// A checkpointed micro-batch (activation checkpointing) runs its forward without autograd and
// keeps only its input and the layers' random state; its backward first runs the forward again
// from them, drawing the same random numbers, then proceeds as above.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tpipe/error.h"
#include "tpipe/layer.h"

namespace tpipe {

class SplitBackward;
struct RngStates;

// The last stage's loss of a micro-batch from its outputs (for a checkpointed micro-batch, the
// recomputation needs it again).
using StageLoss = std::function<at::Tensor(const Payload& outputs)>;

class Stage {
 public:
  Stage(int index, int num_stages, std::vector<LayerPtr> layers, std::vector<std::string> layer_names);

  int index() const { return index_; }
  bool is_first() const { return index_ == 0; }
  bool is_last() const { return index_ == num_stages_ - 1; }

  // Runs the layers. With `training`, floating inputs from another stage become leaves that
  // collect gradients and the micro-batch is stashed for backward; with `checkpoint` too, only
  // its input and random state are.
  Payload forward(int mb, Payload input, bool training, const Where& where, bool checkpoint = false);

  // Last stage: the micro-batch's loss, already weighted by its share of the batch. A
  // checkpointed micro-batch also needs `recompute`, which gives that loss from the outputs.
  void set_loss(int mb, const at::Tensor& loss, const Where& where, StageLoss recompute = {});

  // Backward of one micro-batch. `output_grads` holds one entry per output tensor (undefined
  // where no gradient flows); empty on the last stage, which starts from the loss. Returns one
  // entry per input tensor: its gradient, or undefined. Frees the stash, unless `split`: then it
  // computes the input gradients only (B) and keeps what backward_weight (W) needs.
  Payload backward(int mb, const Payload& output_grads, const Where& where, bool split = false);

  // W of a split backward: the weights' gradients of micro-batch `mb`; frees its stash.
  void backward_weight(int mb, const Where& where);

  // "<layer name>.<parameter name>" -> parameter, in layer order, each tensor once (`layer_names`
  // gives tied layers their key, so every copy of a tied weight has the same name).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<at::Tensor> parameters() const;
  // Each module once, in layer order: (layer name, or the key of a tied weight; its layer).
  std::vector<std::pair<std::string, const Layer*>> named_modules() const;
  void train(bool on);

  std::int64_t stashed_bytes() const { return stashed_bytes_; }
  // The input and output tensors of every stashed micro-batch (the engine counts the memory it
  // holds together with what is being sent).
  std::vector<at::Tensor> stashed_tensors() const;
  void clear_stash();

 private:
  struct Stash {
    Payload input;
    Payload output;
    at::Tensor loss;
    std::int64_t bytes = 0;
    std::shared_ptr<RngStates> rng;  // set for a checkpointed micro-batch
    StageLoss recompute_loss;
  };
  Payload run_layers(Payload x);
  // A checkpointed micro-batch's forward again, with autograd and the saved random state.
  void recompute(Stash& s, const Where& where);
  std::vector<at::Generator> generators() const;  // the layers', each once

  int index_;
  int num_stages_;
  std::vector<LayerPtr> layers_;
  std::vector<std::string> names_;
  std::map<int, Stash> stash_;
  struct Pending {  // a micro-batch between its B and its W
    Stash stash;
    std::shared_ptr<SplitBackward> work;
  };
  std::map<int, Pending> pending_w_;
  std::int64_t stashed_bytes_ = 0;
};

}  // namespace tpipe
