// Splitting payloads into micro-batches and gathering them back (see microbatch.h).
#include "tpipe/microbatch.h"

#include <ATen/ATen.h>

#include "tpipe/error.h"

namespace tpipe {
namespace {

std::vector<Chunking> resolve(const Payload& p, const std::vector<Chunking>& spec) {
  if (spec.empty()) return default_chunking(p);
  if (spec.size() != p.size())
    throw ConfigError("the chunking spec names " + std::to_string(spec.size()) + " tensors, but the payload has " +
                      std::to_string(p.size()));
  return spec;
}

}  // namespace

std::vector<Chunking> default_chunking(const Payload& p) {
  std::vector<Chunking> spec;
  for (const auto& t : p) spec.push_back(t.defined() && t.dim() > 0 ? Chunking::Batch : Chunking::Replicate);
  return spec;
}

std::vector<std::int64_t> microbatch_sizes(std::int64_t n, int m) {
  if (m < 1) throw ConfigError("need at least one micro-batch, got " + std::to_string(m));
  if (n < m)
    throw ConfigError("a batch of " + std::to_string(n) + " cannot be split into " + std::to_string(m) +
                      " micro-batches; use at most " + std::to_string(n) + " micro-batches or a larger batch");
  std::vector<std::int64_t> sizes(m, n / m);
  for (std::int64_t i = 0; i < n % m; ++i) ++sizes[i];
  return sizes;
}

std::int64_t batch_size(const Payload& p, const std::vector<Chunking>& spec_in) {
  const auto spec = resolve(p, spec_in);
  std::int64_t n = -1;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (spec[i] != Chunking::Batch) continue;
    if (!p[i].defined() || p[i].dim() == 0)
      throw ConfigError("payload tensor " + std::to_string(i) + " is marked as batch but has no dimension 0");
    if (n >= 0 && p[i].size(0) != n)
      throw ConfigError("payload tensor " + std::to_string(i) + " has " + std::to_string(p[i].size(0)) +
                        " rows, but tensor 0 of the batch has " + std::to_string(n));
    if (n < 0) n = p[i].size(0);
  }
  if (n < 0) throw ConfigError("the payload has no batch tensor to split");
  return n;
}

std::vector<Payload> split_microbatches(const Payload& batch, int m, const std::vector<Chunking>& spec_in) {
  const auto spec = resolve(batch, spec_in);
  const auto sizes = microbatch_sizes(batch_size(batch, spec), m);
  std::vector<Payload> parts(m);
  std::int64_t offset = 0;
  for (int k = 0; k < m; ++k) {
    for (std::size_t i = 0; i < batch.size(); ++i)
      parts[k].push_back(spec[i] == Chunking::Batch ? batch[i].narrow(0, offset, sizes[k]) : batch[i]);
    offset += sizes[k];
  }
  return parts;
}

Payload gather_microbatches(const std::vector<Payload>& parts, const std::vector<Chunking>& spec_in) {
  if (parts.empty()) return {};
  const auto spec = resolve(parts[0], spec_in);
  Payload out;
  for (std::size_t i = 0; i < parts[0].size(); ++i) {
    if (spec[i] == Chunking::Replicate) {
      out.push_back(parts[0][i]);
      continue;
    }
    std::vector<at::Tensor> pieces;
    for (const auto& p : parts) pieces.push_back(p.at(i));
    out.push_back(at::cat(pieces, 0));
  }
  return out;
}

}  // namespace tpipe
