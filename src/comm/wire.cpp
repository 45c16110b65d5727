// Encoding of message headers (see wire.h).
#include "tpipe/comm/wire.h"

#include <ATen/ATen.h>

#include <cctype>

#include "tpipe/error.h"

namespace tpipe::wire {
namespace {

constexpr std::int64_t kMagic = 0x7470697065;  // "tpipe"

}  // namespace

Header describe(const Payload& p, Kind kind, int mb, int sender_stage) {
  Header h{kind, mb, sender_stage, {}};
  for (const auto& t : p) {
    TensorMeta m;
    m.defined = t.defined();
    if (m.defined) {
      m.dtype = t.scalar_type();
      m.shape = t.sizes().vec();
    }
    h.tensors.push_back(std::move(m));
  }
  return h;
}

at::Tensor encode(const Header& h) {
  if (h.tensors.size() > static_cast<std::size_t>(kMaxTensors))
    throw ShapeError("a payload of " + std::to_string(h.tensors.size()) + " tensors is more than the " +
                     std::to_string(kMaxTensors) + " a message can carry");
  std::vector<std::int64_t> w{kMagic, static_cast<std::int64_t>(h.kind), h.mb, h.sender_stage,
                              static_cast<std::int64_t>(h.tensors.size())};
  for (const auto& m : h.tensors) {
    w.push_back(m.defined ? static_cast<std::int64_t>(m.dtype) : -1);
    w.push_back(static_cast<std::int64_t>(m.shape.size()));
    w.insert(w.end(), m.shape.begin(), m.shape.end());
  }
  if (w.size() > static_cast<std::size_t>(kHeaderWords))
    throw ShapeError("the shapes of this payload need " + std::to_string(w.size()) + " header words, more than " +
                     std::to_string(kHeaderWords));
  w.resize(kHeaderWords, 0);
  return at::tensor(w, at::kLong);
}

at::Tensor empty_header() { return at::zeros({kHeaderWords}, at::kLong); }

Header decode(const at::Tensor& words) {
  const auto* w = words.data_ptr<std::int64_t>();
  std::size_t at_ = 0;
  auto next = [&]() -> std::int64_t {
    if (at_ >= static_cast<std::size_t>(kHeaderWords)) throw CommError("corrupt message header: it runs past its end");
    return w[at_++];
  };
  if (next() != kMagic) throw CommError("corrupt message header: bad magic number (a message from another program?)");
  Header h;
  const auto kind = next();
  if (kind < 1 || kind > kKinds) throw CommError("corrupt message header: unknown kind " + std::to_string(kind));
  h.kind = static_cast<Kind>(kind);
  h.mb = static_cast<int>(next());
  h.sender_stage = static_cast<int>(next());
  const auto count = next();
  if (count < 0 || count > kMaxTensors) throw CommError("corrupt message header: " + std::to_string(count) + " tensors");
  for (std::int64_t i = 0; i < count; ++i) {
    TensorMeta m;
    const auto dtype = next();
    m.defined = dtype >= 0;
    if (m.defined) m.dtype = static_cast<at::ScalarType>(dtype);
    const auto ndim = next();
    for (std::int64_t d = 0; d < ndim; ++d) m.shape.push_back(next());
    h.tensors.push_back(std::move(m));
  }
  return h;
}

Payload allocate(const Header& h) {
  Payload p;
  for (const auto& m : h.tensors)
    p.push_back(m.defined ? at::empty(m.shape, at::TensorOptions().dtype(m.dtype)) : at::Tensor());
  return p;
}

std::string to_string(const TensorMeta& m) {
  if (!m.defined) return "none";
  std::string s = "[";
  for (std::size_t i = 0; i < m.shape.size(); ++i) s += (i ? "," : "") + std::to_string(m.shape[i]);
  std::string dtype = c10::toString(m.dtype);
  for (auto& c : dtype) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s + "] " + dtype;
}

std::string to_string(Kind k) {
  switch (k) {
    case Kind::Activation: return "activation";
    case Kind::Gradient: return "gradient";
    case Kind::Clock: return "clock message";
    case Kind::Trace: return "trace records";
  }
  return "message";
}

namespace {
constexpr int kSlots = 2 * (kMaxTensors + 1);  // header, 15 predicted, 15 not, one unused
int slot_base(Kind kind, int mb, int link) {
  if (mb < 0 || mb >= kMaxMicrobatches || link < 0 || link >= kMaxLinks)
    throw ConfigError("a message of micro-batch " + std::to_string(mb) + " on link " + std::to_string(link) +
                      " has no tag: micro-batches go up to " + std::to_string(kMaxMicrobatches - 1) + ", links to " +
                      std::to_string(kMaxLinks - 1));
  return ((mb * kKinds + static_cast<int>(kind) - 1) * kMaxLinks + link) * kSlots;
}
}  // namespace

int header_tag(Kind kind, int mb, int link) { return slot_base(kind, mb, link); }

int data_tag(Kind kind, int mb, int link, int i, bool predicted) {
  return slot_base(kind, mb, link) + 1 + i + (predicted ? 0 : kMaxTensors);
}

}  // namespace tpipe::wire
