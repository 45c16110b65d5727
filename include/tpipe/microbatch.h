// Micro-batches. A Payload is the ordered list of tensors that flows between stages (hidden
// states, an int64 index tensor, an attention mask ...). Splitting cuts the batch tensors along
// dim 0 into m parts whose sizes differ by at most one (10 rows in 4 -> 3,3,2,2) and hands every
// micro-batch the replicated tensors whole (a mask shared by all samples, a scale vector).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tpipe {

using Payload = std::vector<at::Tensor>;

enum class Chunking { Batch, Replicate };

// Batch for tensors with at least one dimension, Replicate for 0-dim tensors.
std::vector<Chunking> default_chunking(const Payload& p);

// Sizes of m micro-batches of a batch of n: larger first, differing by at most one.
std::vector<std::int64_t> microbatch_sizes(std::int64_t n, int m);

// The batch size of a payload: dim 0 of its batch tensors, which must agree.
std::int64_t batch_size(const Payload& p, const std::vector<Chunking>& spec = {});

// Splits into m payloads. An empty spec means default_chunking. Throws ConfigError when the
// batch has fewer rows than m, batch tensors disagree on dim 0, or the spec has the wrong length.
std::vector<Payload> split_microbatches(const Payload& batch, int m, const std::vector<Chunking>& spec = {});

// Inverse of split: batch tensors concatenated along dim 0, replicated ones taken from part 0.
Payload gather_microbatches(const std::vector<Payload>& parts, const std::vector<Chunking>& spec = {});

}  // namespace tpipe
