// Communicator over c10d ProcessGroupGloo (see communicator.h).
#include "tpipe/comm/communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "group_impl.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "lane.h"

namespace tpipe {

// A receive: its header is posted at once, and so are its data receives when the channel's last
// message predicts the shapes; its lane waits for the header, posts the data receives if they
// were not predicted (or the prediction was wrong), waits for them, then hands the payload (or
// what went wrong) to the consumer.
struct Communicator::PendingRecv {
  int src;
  wire::Kind kind;
  int mb;
  std::vector<at::Tensor> header;
  c10::intrusive_ptr<c10d::Work> header_work;
  at::Tensor predicted_header;  // the channel's last header, undefined when nothing was predicted
  Payload predicted;
  std::vector<c10::intrusive_ptr<c10d::Work>> predicted_works;

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Payload payload;
  std::string error;  // without the consumer's "[rank | stage | mb | action]" prefix
};

namespace {

// Activations and gradients repeat their shapes from step to step; the engine's own messages
// (clock, trace records) do not, and are not predicted.
bool predictable(wire::Kind k) { return k == wire::Kind::Activation || k == wire::Kind::Gradient; }

// One direction of messages of one kind and micro-batch with one peer.
using Channel = std::tuple<int, wire::Kind, int>;

// A send in flight: its tensors are held until the peer has taken them.
struct PendingSend {
  std::vector<std::vector<at::Tensor>> tensors;  // header, then each data tensor
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
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

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0; }

}  // namespace

struct Communicator::Impl {
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::unique_ptr<Group> world_group;
  std::map<std::string, int> groups_named;  // how many groups of each name this rank created

  // Point-to-point progress: one lane per peer for receives, one for sends (see lane.h).
  detail::Stopper stopper;
  std::map<int, std::unique_ptr<detail::Lane>> recv_lanes, send_lanes;
  std::mutex sends_mu;  // guards what the send lanes share with the engine's thread
  std::set<std::shared_ptr<PendingSend>> in_flight;
  std::string send_error;  // the first failed send, with its prefix

  // The last header of each channel, sent (engine's thread only) and received (written by the
  // lanes): both sides know what the receiver predicts for the next message.
  std::map<Channel, at::Tensor> sent_last;
  std::mutex recv_last_mu;
  std::map<Channel, at::Tensor> recv_last;

  void wait(c10d::Work& w, const Where& where, const std::string& what, int peer) {
    detail::wait_work(w, timeout, where, what, peer);
  }

  detail::Lane& lane(std::map<int, std::unique_ptr<detail::Lane>>& lanes, int peer) {
    auto& l = lanes[peer];
    if (!l) l = std::make_unique<detail::Lane>();
    return *l;
  }

  // Waits on a lane; false when the Communicator is going away (the wait was aborted). A failure
  // throws with Gloo's message, which the caller turns into text.
  bool lane_wait(c10d::Work& w) {
    if (!stopper.enter(&w)) return false;
    bool ok = false;
    try {
      ok = w.wait(timeout);
    } catch (...) {
      stopper.leave(&w);
      throw;
    }
    stopper.leave(&w);
    return ok && !stopper.stopping();
  }

  void fetch(PendingRecv& r);
  void complete(const std::shared_ptr<PendingSend>& s);

  std::unique_ptr<Group> make_group(const std::string& name, const std::vector<int>& ranks,
                                    c10::intrusive_ptr<c10d::ProcessGroup> group_pg) {
    auto g = std::make_unique<Group::Impl>();
    g->name = name;
    g->ranks = ranks;
    g->index = static_cast<int>(std::find(ranks.begin(), ranks.end(), rank) - ranks.begin());
    g->global_rank = rank;
    g->timeout = timeout;
    if (ranks.size() > 1) g->pg = std::move(group_pg);
    return std::make_unique<Group>(std::move(g));
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
  impl_->gloo_options = opts;
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
  // Gloo's constructor returns once this rank's connections are up, possibly before a peer's
  // are: a rank that failed right after it would break the peer's rendezvous. The barrier ends
  // construction everywhere before any rank goes on.
  impl_->wait(*impl_->pg->barrier(), Where{rank}, "rendezvous barrier", -1);
  std::vector<int> all(world_size);
  for (int r = 0; r < world_size; ++r) all[r] = r;
  impl_->world_group = impl_->make_group("world", all, impl_->pg);
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
  if (!impl_) return;
  // The lanes go first: their waits are aborted and their threads joined while the process
  // group still exists; then the process group (closing its connections, so peers see this rank
  // leave); only then the buffers of sends and receives it might still have touched.
  impl_->stopper.stop();
  impl_->recv_lanes.clear();
  impl_->send_lanes.clear();
  impl_->world_group.reset();
  impl_->pg.reset();
  impl_->in_flight.clear();
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
  r->header_work = impl_->pg->recv(r->header, src, wire::header_tag(kind, mb));
  if (predictable(kind)) {
    std::lock_guard<std::mutex> lock(impl_->recv_last_mu);
    auto it = impl_->recv_last.find({src, kind, mb});
    if (it != impl_->recv_last.end()) r->predicted_header = it->second;
  }
  if (r->predicted_header.defined()) {
    r->predicted = wire::allocate(wire::decode(r->predicted_header));
    for (std::size_t i = 0; i < r->predicted.size(); ++i) {
      if (!r->predicted[i].defined()) continue;
      std::vector<at::Tensor> one{r->predicted[i]};
      r->predicted_works.push_back(impl_->pg->recv(one, src, wire::data_tag(kind, mb, static_cast<int>(i), true)));
    }
  }
  impl_->lane(impl_->recv_lanes, src).post([impl = impl_.get(), r] { impl->fetch(*r); });
  return r;
}

// On the peer's receive lane: the header, then the data. Predicted data receives are always
// completed (with the real data, or with the sender's stand-ins of the predicted shapes when the
// shapes changed); otherwise the data receives are posted as soon as the header says what to
// allocate, so the data moves while the consumer is still computing.
void Communicator::Impl::fetch(PendingRecv& r) {
  const std::string what = "receiving the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) +
                           " from rank " + std::to_string(r.src);
  std::string error;
  Payload p;
  try {
    bool ok = lane_wait(*r.header_work);
    if (ok) {
      const wire::Header h = wire::decode(r.header[0]);
      if (h.kind != r.kind || h.mb != r.mb)
        throw CommError("expected the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) + " from rank " +
                        std::to_string(r.src) + ", got the " + wire::to_string(h.kind) + " of mb " +
                        std::to_string(h.mb));
      for (auto& w : r.predicted_works) ok = ok && lane_wait(*w);
      const bool as_predicted = r.predicted_header.defined() && at::equal(r.predicted_header, r.header[0]);
      if (as_predicted) {
        p = std::move(r.predicted);
      } else {
        p = wire::allocate(h);
        std::vector<c10::intrusive_ptr<c10d::Work>> works;
        for (std::size_t i = 0; i < p.size(); ++i) {
          if (!p[i].defined()) continue;
          std::vector<at::Tensor> one{p[i]};
          works.push_back(pg->recv(one, r.src, wire::data_tag(r.kind, r.mb, static_cast<int>(i), false)));
        }
        for (auto& w : works) ok = ok && lane_wait(*w);
      }
      if (ok && predictable(r.kind)) {
        std::lock_guard<std::mutex> lock(recv_last_mu);
        recv_last[{r.src, r.kind, r.mb}] = r.header[0];
      }
    }
    if (!ok) error = what + " was cut short: this rank's Communicator is closing";
  } catch (const CommError& e) {
    error = e.what();
  } catch (const std::exception& e) {
    error = detail::failure_text(what, e.what(), r.src, timeout);
  }
  std::lock_guard<std::mutex> lock(r.mu);
  r.error = std::move(error);
  if (r.error.empty()) r.payload = std::move(p);
  r.done = true;
  r.cv.notify_all();
}

Payload Communicator::wait_recv(PendingRecv& r, const Where& where) {
  std::unique_lock<std::mutex> lock(r.mu);
  // The lane's own waits are bounded by the timeout (header, then data); this bound only guards
  // against a lane that never reports.
  const auto bound = 2 * impl_->timeout + std::chrono::seconds(10);
  if (!r.cv.wait_for(lock, bound, [&] { return r.done; }))
    throw CommError(where.prefix() + "receiving the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) +
                    " from rank " + std::to_string(r.src) + " did not finish");
  if (!r.error.empty()) throw CommError(where.prefix() + r.error);
  return std::move(r.payload);
}

void Communicator::send(const Payload& p, int dst, wire::Kind kind, int mb, int sender_stage, const Where& where) {
  {
    std::lock_guard<std::mutex> lock(impl_->sends_mu);
    if (!impl_->send_error.empty()) throw CommError(impl_->send_error);
  }
  auto s = std::make_shared<PendingSend>();
  s->dst = dst;
  s->where = where;
  auto post = [&](at::Tensor t, int tag) {
    s->tensors.push_back({std::move(t)});
    s->works.push_back(impl_->pg->send(s->tensors.back(), dst, tag));
  };
  const at::Tensor header = wire::encode(wire::describe(p, kind, mb, sender_stage));
  post(header, wire::header_tag(kind, mb));
  // What the receiver predicted: this channel's last header. When the shapes changed, its
  // predicted receives get stand-ins of the old shapes and the data goes on the other tags.
  at::Tensor* last = nullptr;
  if (predictable(kind)) last = &impl_->sent_last[{dst, kind, mb}];
  const bool as_predicted = last && last->defined() && at::equal(*last, header);
  if (last && last->defined() && !as_predicted) {
    const Payload stand_ins = wire::allocate(wire::decode(*last));
    for (std::size_t i = 0; i < stand_ins.size(); ++i)
      if (stand_ins[i].defined()) post(stand_ins[i], wire::data_tag(kind, mb, static_cast<int>(i), true));
  }
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i].defined()) post(p[i].detach().contiguous(), wire::data_tag(kind, mb, static_cast<int>(i), as_predicted));
  if (last) *last = header;
  {
    std::lock_guard<std::mutex> lock(impl_->sends_mu);
    impl_->in_flight.insert(s);
  }
  impl_->lane(impl_->send_lanes, dst).post([impl = impl_.get(), s] { impl->complete(s); });
}

// On the peer's send lane: once the peer has taken every tensor, they are released.
void Communicator::Impl::complete(const std::shared_ptr<PendingSend>& s) {
  const std::string what = "sending to rank " + std::to_string(s->dst);
  std::string error;
  try {
    for (auto& w : s->works)
      if (!lane_wait(*w)) break;  // closing: nothing to report
  } catch (const std::exception& e) {
    error = s->where.prefix() + detail::failure_text(what, e.what(), s->dst, timeout);
  }
  std::lock_guard<std::mutex> lock(sends_mu);
  if (send_error.empty()) send_error = std::move(error);
  in_flight.erase(s);
}

void Communicator::wait_sends() {
  for (auto& [peer, lane] : impl_->send_lanes) lane->drain();
  std::lock_guard<std::mutex> lock(impl_->sends_mu);
  if (!impl_->send_error.empty()) throw CommError(impl_->send_error);
}

std::vector<at::Tensor> Communicator::tensors_in_flight() const {
  std::lock_guard<std::mutex> lock(impl_->sends_mu);
  std::vector<at::Tensor> out;
  for (const auto& s : impl_->in_flight)
    for (std::size_t i = 1; i < s->tensors.size(); ++i) out.push_back(s->tensors[i][0]);
  return out;
}

Group& Communicator::world() { return *impl_->world_group; }

std::unique_ptr<Group> Communicator::new_group(const std::string& name, const std::vector<int>& ranks) {
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  if (sorted.empty() || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end() || sorted.front() < 0 ||
      sorted.back() >= impl_->world)
    throw ConfigError(Where{impl_->rank}.prefix() + "group '" + name + "' needs distinct ranks in [0, " +
                      std::to_string(impl_->world) + ")");
  const auto me = std::find(ranks.begin(), ranks.end(), impl_->rank);
  if (me == ranks.end())
    throw ConfigError(Where{impl_->rank}.prefix() + "cannot create group '" + name + "': this rank is not in it");
  if (ranks.size() == 1) return impl_->make_group(name, ranks, {});
  const int generation = impl_->groups_named[name]++;
  auto prefixed =
      c10::make_intrusive<c10d::PrefixStore>("group/" + name + "/" + std::to_string(generation), impl_->store);
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  try {
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(me - ranks.begin()),
                                                     static_cast<int>(ranks.size()), impl_->gloo_options);
    pg->barrier()->wait(impl_->timeout);  // as in the constructor: rendezvous done on every member
  } catch (const std::exception& e) {
    throw CommError(Where{impl_->rank}.prefix() + "creating group '" + name + "' failed: " + e.what());
  }
  return impl_->make_group(name, ranks, pg);
}

}  // namespace tpipe
