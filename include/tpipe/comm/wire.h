// The header that precedes every activation or gradient message. The receiver learns count,
// dtypes and shapes from it before it allocates, so shapes may change between micro-batches, and
// a message that is not the one expected (wrong micro-batch, kind or sender) is caught on arrival.
//
//   int64[kHeaderWords]: magic, kind, mb, sender stage, count, then per tensor
//                        dtype code (-1: undefined tensor), ndim, dims...
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tpipe/microbatch.h"

namespace tpipe::wire {

constexpr int kHeaderWords = 64;
constexpr int kMaxTensors = 15;  // tags reserve 32 slots per message: header, tensors twice (below)
// Two messages of one kind and micro-batch between the same two ranks (a rank holding several
// stages) are told apart by their link: the sending stage's chunk on its rank, 0..kMaxLinks-1.
constexpr int kMaxLinks = 16;
constexpr int kMaxMicrobatches = 1 << 20;  // so that every tag fits in an int

// Activations and gradients flow along the pipeline; Clock and Trace messages are the engine's
// own (clock alignment at start-up, trace records gathered on rank 0 after a step).
enum class Kind : std::int64_t { Activation = 1, Gradient = 2, Clock = 3, Trace = 4 };
constexpr int kKinds = 4;

struct TensorMeta {
  bool defined = true;
  at::ScalarType dtype = at::kFloat;
  std::vector<std::int64_t> shape;
};

struct Header {
  Kind kind = Kind::Activation;
  int mb = 0;
  int sender_stage = 0;
  std::vector<TensorMeta> tensors;
};

Header describe(const Payload& p, Kind kind, int mb, int sender_stage);
at::Tensor encode(const Header& h);     // int64 [kHeaderWords]; throws ShapeError when it does not fit
Header decode(const at::Tensor& words);  // throws CommError on a corrupt header
at::Tensor empty_header();
Payload allocate(const Header& h);      // uninitialised tensors to receive into (undefined stay undefined)

std::string to_string(const TensorMeta& m);  // "[8,512] double", "none"
std::string to_string(Kind k);               // "activation", "gradient"

// The c10d tag of a message's header (0 <= mb < kMaxMicrobatches, 0 <= link < kMaxLinks).
int header_tag(Kind kind, int mb, int link);
// The c10d tag of tensor `i` of a message. A receiver that expects the same shapes as last time
// posts its data receives before the header arrives, on the `predicted` tags; the sender knows
// what was predicted (its own last message on that channel) and sends on those tags when the
// shapes match, on the others when they do not (or when nothing was predicted).
int data_tag(Kind kind, int mb, int link, int i, bool predicted);

}  // namespace tpipe::wire
