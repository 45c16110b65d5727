// Communicator over c10d ProcessGroupGloo (see communicator.h).
// Set-up (rendezvous), groups and teardown here; point-to-point messages in point_to_point.cpp.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "communicator_impl.h"
#include "tpipe/comm/rank_env.h"

namespace tpipe {
namespace {

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0; }

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// Every rank marks its arrival in the store, then waits until all have, so that ranks (or a whole
// node) that never come are named after the timeout instead of failing Gloo's rendezvous with a
// bare "Socket Timeout". `local` is the ranks per node (LOCAL_WORLD_SIZE), 0 when not known.
void roll_call(c10d::Store& store, const RankEnv& e, int local, std::chrono::milliseconds timeout,
               const std::string& host) {
  const std::string key = "tpipe/arrived/";
  // Where each rank is, before it counts as arrived: a failure can then be traced to a host.
  store.set(detail::kHostKey + std::to_string(e.rank), std::vector<std::uint8_t>(host.begin(), host.end()));
  store.set(key + std::to_string(e.rank), std::vector<std::uint8_t>{1});
  store.add("tpipe/arrivals", 1);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (store.add("tpipe/arrivals", 0) < e.world_size) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::string missing, nodes;
      int count = 0, last_node = -1;
      for (int r = 0; r < e.world_size; ++r) {
        if (store.check({key + std::to_string(r)})) continue;
        missing += (count++ ? ", " : "") + std::to_string(r);
        if (local > 0 && r / local != last_node)
          nodes += (nodes.empty() ? "" : ", ") + std::to_string(last_node = r / local);
      }
      if (count == 0) return;  // the last one arrived just now
      throw CommError(Where{e.rank}.prefix() + "rendezvous of " + std::to_string(e.world_size) + " ranks at " +
                      e.master_addr + ":" + std::to_string(e.master_port) + ": " + (count == 1 ? "rank " : "ranks ") +
                      missing + (nodes.empty() ? "" : " (node" + std::string(nodes.find(',') != std::string::npos ? "s " : " ") + nodes + ")") +
                      " never arrived within " + c10::str(timeout.count() / 1000.0) +
                      " s: not started, or they cannot reach it");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

Communicator::Communicator(int rank, int world_size, const c10::intrusive_ptr<c10d::Store>& store,
                           const CommOptions& options, const std::string& host)
    : impl_(std::make_unique<Impl>()) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw ConfigError("rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world_size));
  impl_->rank = rank;
  impl_->world = world_size;
  impl_->timeout = options.timeout;
  impl_->spin_wait = options.spin_wait;
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
                    " ranks failed (did every rank start?): " + first_line(e.what()));
  }
  // Gloo's constructor returns once this rank's connections are up, possibly before a peer's
  // are: a rank that failed right after it would break the peer's rendezvous. The barrier ends
  // construction everywhere before any rank goes on.
  impl_->wait(*impl_->pg->barrier(), Where{rank}, "rendezvous barrier", -1);
  try {
    impl_->connect_shm(options);
  } catch (const std::exception& e) {
    throw CommError(Where{rank}.prefix() + "pairing up with the ranks on this host failed: " + first_line(e.what()));
  }
  std::vector<int> all(world_size);
  for (int r = 0; r < world_size; ++r) all[r] = r;
  try {  // from_env put every rank's host in the store
    impl_->hosts_known = store->check({detail::kHostKey + std::to_string(rank)});
  } catch (const std::exception&) {
  }
  impl_->world_group = impl_->make_group("world", all, impl_->pg, "arrived/world");
}

std::unique_ptr<Communicator> Communicator::from_env(const CommOptions& options) {
  const RankEnv e = rank_env(process_env());
  CommOptions opts = options;
  if (const auto t = process_env()("TPIPE_TRANSPORT")) {
    if (*t == "gloo")
      opts.shared_memory = false;
    else if (*t != "auto" && !t->empty())
      throw ConfigError(Where{e.rank}.prefix() + "TPIPE_TRANSPORT is '" + *t +
                        "': it is 'auto' (shared memory between ranks of one host) or 'gloo'");
  }
  if (const auto w = process_env()("TPIPE_WAIT")) {
    if (*w == "spin")
      opts.spin_wait = std::chrono::seconds(1);
    else if (*w == "sleep")
      opts.spin_wait = std::chrono::milliseconds(0);
    else if (!w->empty())
      throw ConfigError(Where{e.rank}.prefix() + "TPIPE_WAIT is '" + *w +
                        "': it is 'spin' (a rank waiting for a peer on its host polls, for a rank with a core of its "
                        "own) or 'sleep'");
  }
  const int rank = e.rank, world = e.world_size, port = e.master_port;
  const std::string& addr = e.master_addr;
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = world;
  so.waitWorkers = false;  // the roll call below waits, and names who is missing
  so.timeout = options.timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    throw CommError(Where{rank}.prefix() + "cannot reach the rendezvous at " + addr + ":" + std::to_string(port) +
                    (rank == 0 ? " (is the port in use?)" : " (did rank 0 start?)") + ": " + first_line(e.what()));
  }
  // Gloo binds to the address this machine reaches the master by (on a machine with several
  // interfaces, the one routed toward the other nodes), unless GLOO_SOCKET_IFNAME names one.
  const std::string host = is_loopback(addr) ? "127.0.0.1" : local_address_toward(addr);
  const auto local = process_env()("LOCAL_WORLD_SIZE");
  int per_node = 0;
  try {
    per_node = local ? std::stoi(*local) : 0;
  } catch (const std::exception&) {
  }
  try {
    roll_call(*store, e, per_node > 0 && world % per_node == 0 ? per_node : 0, options.timeout, host);
  } catch (const CommError&) {
    throw;
  } catch (const std::exception& x) {
    throw CommError(Where{rank}.prefix() + "the rendezvous at " + addr + ":" + std::to_string(port) +
                    " went away (rank 0, which holds it, failed or ended): " + first_line(x.what()));
  }
  return std::make_unique<Communicator>(rank, world, store, opts, host);
}

Communicator::~Communicator() {
  if (!impl_) return;
  // The lanes go first: their waits are aborted and their threads joined while the process
  // group still exists; then the process group (closing its connections, so peers see this rank
  // leave); only then the buffers of sends and receives it might still have touched.
  impl_->stopper.stop();
  impl_->recv_lanes.clear();
  impl_->send_lanes.clear();
  impl_->shm_peers.clear();  // closed: a peer waiting on this rank's messages fails at once
  impl_->world_group.reset();
  impl_->pg.reset();
  impl_->in_flight.clear();
}

int Communicator::rank() const { return impl_->rank; }
int Communicator::world_size() const { return impl_->world; }
std::chrono::milliseconds Communicator::timeout() const { return impl_->timeout; }

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
  if (ranks.size() == 1) return impl_->make_group(name, ranks, {}, "");
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
  return impl_->make_group(name, ranks, pg, "arrived/" + name + "/" + std::to_string(generation));
}

}  // namespace tpipe
