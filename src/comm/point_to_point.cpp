// Point-to-point messages of the Communicator (see communicator.h) through Gloo: receives whose
// data is fetched by a lane as soon as the header says what it is (or posted with the header when
// the channel's last message predicts the shapes), and sends released as soon as the peer has
// them. Peers on this host are reached through shared memory instead (shm_messages.cpp).
#include "communicator_impl.h"
#include "tpipe/memory.h"

namespace tpipe {

std::shared_ptr<Communicator::PendingRecv> Communicator::post_recv(int src, wire::Kind kind, int mb, int link) {
  auto r = std::make_shared<PendingRecv>();
  r->src = src;
  r->kind = kind;
  r->mb = mb;
  r->link = link;
  if (impl_->shm_peer(src)) {  // nothing to post: wait_recv reads it from shared memory
    r->shm = true;
    return r;
  }
  r->header = {wire::empty_header()};
  r->header_work = impl_->pg->recv(r->header, src, wire::header_tag(kind, mb, link));
  if (detail::predictable(kind)) {
    std::lock_guard<std::mutex> lock(impl_->recv_last_mu);
    auto it = impl_->recv_last.find({src, kind, mb, link});
    if (it != impl_->recv_last.end()) r->predicted_header = it->second;
  }
  if (r->predicted_header.defined()) {
    r->predicted = wire::allocate(wire::decode(r->predicted_header));
    r->predicted_works = impl_->post_data_recvs(r->predicted, *r, true);
  }
  // The lane allocates the data on this thread's behalf: counted where this thread counts.
  impl_->lane(impl_->recv_lanes, src).post([impl = impl_.get(), r, counting = CountingContext::current()] {
    CountingScope scope(counting);
    impl->fetch(*r);
  });
  return r;
}

std::vector<c10::intrusive_ptr<c10d::Work>> Communicator::Impl::post_data_recvs(Payload& into, const PendingRecv& r,
                                                                                bool predicted) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (std::size_t i = 0; i < into.size(); ++i) {
    if (!into[i].defined()) continue;
    std::vector<at::Tensor> one{into[i]};
    works.push_back(pg->recv(one, r.src, wire::data_tag(r.kind, r.mb, r.link, static_cast<int>(i), predicted)));
  }
  return works;
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
    bool ok = lane_wait(*r.header_work, timeout);
    if (ok) {
      const wire::Header h = wire::decode(r.header[0]);
      if (h.kind != r.kind || h.mb != r.mb)
        throw CommError("expected the " + wire::to_string(r.kind) + " of mb " + std::to_string(r.mb) + " from rank " +
                        std::to_string(r.src) + ", got the " + wire::to_string(h.kind) + " of mb " +
                        std::to_string(h.mb));
      for (auto& w : r.predicted_works) ok = ok && lane_wait(*w, timeout);
      const bool as_predicted = r.predicted_header.defined() && at::equal(r.predicted_header, r.header[0]);
      if (as_predicted) {
        p = std::move(r.predicted);
      } else {
        p = wire::allocate(h);
        for (auto& w : post_data_recvs(p, r, false)) ok = ok && lane_wait(*w, timeout);
      }
      if (ok && detail::predictable(r.kind)) {
        std::lock_guard<std::mutex> lock(recv_last_mu);
        recv_last[{r.src, r.kind, r.mb, r.link}] = r.header[0];
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
  if (r.shm) return impl_->shm_receive(*impl_->shm_peer(r.src), r, where);
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

void Communicator::send(const Payload& p, int dst, wire::Kind kind, int mb, int link, int sender_stage,
                        const Where& where) {
  {
    std::lock_guard<std::mutex> lock(impl_->sends_mu);
    if (!impl_->send_error.empty()) throw CommError(impl_->send_error);
  }
  const at::Tensor header = wire::encode(wire::describe(p, kind, mb, sender_stage));
  if (auto* peer = impl_->shm_peer(dst)) return impl_->shm_send(*peer, header, p, dst, link, where);
  auto s = std::make_shared<detail::PendingSend>();
  s->dst = dst;
  s->where = where;
  auto post = [&](at::Tensor t, int tag) {
    s->tensors.push_back({std::move(t)});
    s->works.push_back(impl_->pg->send(s->tensors.back(), dst, tag));
  };
  post(header, wire::header_tag(kind, mb, link));
  // What the receiver predicted: this channel's last header. When the shapes changed, its
  // predicted receives get stand-ins of the old shapes and the data goes on the other tags.
  at::Tensor* last = nullptr;
  if (detail::predictable(kind)) last = &impl_->sent_last[{dst, kind, mb, link}];
  const bool as_predicted = last && last->defined() && at::equal(*last, header);
  if (last && last->defined() && !as_predicted) {
    const Payload stand_ins = wire::allocate(wire::decode(*last));
    for (std::size_t i = 0; i < stand_ins.size(); ++i)
      if (stand_ins[i].defined()) post(stand_ins[i], wire::data_tag(kind, mb, link, static_cast<int>(i), true));
  }
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i].defined()) post(p[i].detach().contiguous(), wire::data_tag(kind, mb, link, static_cast<int>(i), as_predicted));
  if (last) *last = header;
  {
    std::lock_guard<std::mutex> lock(impl_->sends_mu);
    impl_->in_flight.insert(s);
  }
  impl_->lane(impl_->send_lanes, dst).post([impl = impl_.get(), s] { impl->complete(s); });
}

// On the peer's send lane: once the peer has taken every tensor, they are released.
void Communicator::Impl::complete(const std::shared_ptr<detail::PendingSend>& s) {
  const std::string what = "sending to rank " + std::to_string(s->dst);
  std::string error;
  try {
    for (auto& w : s->works)
      if (!lane_wait(*w, 2 * timeout)) break;  // closing: nothing to report
  } catch (const std::exception& e) {
    error = s->where.prefix() + detail::failure_text(what, e.what(), s->dst, 2 * timeout);
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

}  // namespace tpipe
