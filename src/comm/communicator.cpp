// Communicator over c10d ProcessGroupGloo (see communicator.h).
#include "tpipe/comm/communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdio>
#include <cstdlib>

namespace tpipe {

struct Communicator::PendingRecv {
  int src;
  wire::Kind kind;
  int mb;
  std::vector<at::Tensor> header;
  c10::intrusive_ptr<c10d::Work> work;
};

namespace {

struct PendingSend {
  std::vector<at::Tensor> tensors;
  c10::intrusive_ptr<c10d::Work> work;
  int dst;
  Where where;
};

std::string env_or_throw(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    throw ConfigError(std::string(name) +
                      " is not set: start the ranks with `tpipe run -n N -- PROGRAM` (or torchrun, mpirun, Slurm)");
  return v;
}

int env_int(const char* name) {
  const std::string v = env_or_throw(name);
  try {
    std::size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw ConfigError(std::string(name) + "='" + v + "' is not a whole number");
}

std::string seconds(std::chrono::milliseconds t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(t.count()) / 1000.0);
  return buf;
}

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0; }

// Why a wait failed, in words a user can act on.
std::string explain(const std::string& gloo_message, int peer, std::chrono::milliseconds timeout) {
  const std::string who = peer >= 0 ? "rank " + std::to_string(peer) : "a peer rank";
  if (gloo_message.find("Timed out") != std::string::npos || gloo_message.find("timed out") != std::string::npos)
    return who + " sent nothing for " + seconds(timeout) + " (hung, or its schedule does not match this one); the timeout is set by CommOptions::timeout";
  return who + " closed the connection (it died or failed)";
}

}  // namespace

struct Communicator::Impl {
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::vector<PendingSend> sends;

  void wait(c10d::Work& w, const Where& where, const std::string& what, int peer) {
    try {
      w.wait(timeout);
    } catch (const std::exception& e) {
      const std::string msg = e.what();
      throw CommError(where.prefix() + what + " failed: " + explain(msg, peer, timeout) + " [gloo: " +
                      msg.substr(0, msg.find('\n')) + "]");
    }
  }
};

Communicator::Communicator(int rank, int world_size, const c10::intrusive_ptr<c10d::Store>& store,
                           const CommOptions& options, const std::string& host)
    : impl_(std::make_unique<Impl>()) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw ConfigError("rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world_size));
  impl_->rank = rank;
  impl_->world = world_size;
  impl_->timeout = options.timeout;
  impl_->store = store;
  auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (host.empty())
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
  try {
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, opts);
  } catch (const std::exception& e) {
    throw CommError(Where{rank}.prefix() + "rendezvous of " + std::to_string(world_size) +
                    " ranks failed (did every rank start?): " + e.what());
  }
}

std::unique_ptr<Communicator> Communicator::from_env(const CommOptions& options) {
  const int rank = env_int("RANK");
  const int world = env_int("WORLD_SIZE");
  const std::string addr = env_or_throw("MASTER_ADDR");
  const int port = env_int("MASTER_PORT");
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = world;
  so.timeout = options.timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    throw CommError(Where{rank}.prefix() + "cannot reach the rendezvous at " + addr + ":" + std::to_string(port) +
                    (rank == 0 ? " (is the port in use?)" : " (did rank 0 start?)") + ": " + e.what());
  }
  return std::make_unique<Communicator>(rank, world, store, options, is_loopback(addr) ? "127.0.0.1" : "");
}

Communicator::~Communicator() {
  // Unwaited sends must not outlive the group: drop them (their peers see the connection close).
  if (impl_) impl_->sends.clear();
}

int Communicator::rank() const { return impl_->rank; }
int Communicator::world_size() const { return impl_->world; }
std::chrono::milliseconds Communicator::timeout() const { return impl_->timeout; }

std::shared_ptr<Communicator::PendingRecv> Communicator::post_recv(int src, wire::Kind kind, int mb) {
  auto r = std::make_shared<PendingRecv>();
  r->src = src;
  r->kind = kind;
  r->mb = mb;
  r->header = {wire::empty_header()};
  r->work = impl_->pg->recv(r->header, src, wire::tag(kind, mb, 0));
  return r;
}

Payload Communicator::wait_recv(PendingRecv& r, const Where& where) {
  const std::string what = "receiving the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) +
                           " from rank " + std::to_string(r.src);
  impl_->wait(*r.work, where, what, r.src);
  const wire::Header h = wire::decode(r.header[0]);
  if (h.kind != r.kind || h.mb != r.mb)
    throw CommError(where.prefix() + "expected the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) +
                    " from rank " + std::to_string(r.src) + ", got the " + wire::to_string(h.kind) + " of mb " +
                    std::to_string(h.mb));
  Payload p = wire::allocate(h);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!p[i].defined()) continue;
    std::vector<at::Tensor> one{p[i]};
    works.push_back(impl_->pg->recv(one, r.src, wire::tag(r.kind, r.mb, static_cast<int>(i) + 1)));
  }
  for (auto& w : works) impl_->wait(*w, where, what, r.src);
  return p;
}

void Communicator::send(const Payload& p, int dst, wire::Kind kind, int mb, int sender_stage, const Where& where) {
  std::vector<at::Tensor> header{wire::encode(wire::describe(p, kind, mb, sender_stage))};
  impl_->sends.push_back({header, impl_->pg->send(header, dst, wire::tag(kind, mb, 0)), dst, where});
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (!p[i].defined()) continue;
    std::vector<at::Tensor> one{p[i].detach().contiguous()};
    impl_->sends.push_back({one, impl_->pg->send(one, dst, wire::tag(kind, mb, static_cast<int>(i) + 1)), dst, where});
  }
}

void Communicator::wait_sends() {
  auto sends = std::move(impl_->sends);
  impl_->sends.clear();
  for (auto& s : sends)
    impl_->wait(*s.work, s.where, "sending to rank " + std::to_string(s.dst), s.dst);
}

void Communicator::broadcast(at::Tensor& t, int root) {
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->wait(*impl_->pg->broadcast(v, o), Where{impl_->rank}, "broadcast from rank " + std::to_string(root), root);
}

void Communicator::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  impl_->wait(*impl_->pg->allreduce(tensors), Where{impl_->rank}, "all-reduce", -1);
}

void Communicator::barrier() { impl_->wait(*impl_->pg->barrier(), Where{impl_->rank}, "barrier", -1); }

}  // namespace tpipe
