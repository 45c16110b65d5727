// Inserts SEND_*/RECV_* actions between stages that live on different ranks (see comm_pass.h).
#include "tpipe/schedule/comm_pass.h"

#include "tpipe/error.h"

namespace tpipe {
namespace {

// The receive a compute action needs before it can run, if its input comes from another rank.
bool needs_recv(const Schedule& s, const Action& a, Action& recv) {
  const int last = s.num_stages() - 1;
  if (a.op == Op::Forward && a.stage > 0 && s.rank_of(a.stage - 1) != s.rank_of(a.stage)) {
    recv = {a.stage, Op::RecvAct, a.mb};
    return true;
  }
  if (a.op == Op::Backward && a.stage < last && s.rank_of(a.stage + 1) != s.rank_of(a.stage)) {
    recv = {a.stage, Op::RecvGrad, a.mb};
    return true;
  }
  return false;
}

// The send that follows a compute action whose output another rank consumes.
bool needs_send(const Schedule& s, const Action& a, Action& send) {
  const int last = s.num_stages() - 1;
  if (a.op == Op::Forward && a.stage < last && s.rank_of(a.stage + 1) != s.rank_of(a.stage)) {
    send = {a.stage, Op::SendAct, a.mb};
    return true;
  }
  if (a.op == Op::Backward && a.stage > 0 && s.rank_of(a.stage - 1) != s.rank_of(a.stage)) {
    send = {a.stage, Op::SendGrad, a.mb};
    return true;
  }
  return false;
}

}  // namespace

Schedule insert_comms(const Schedule& in) {
  Schedule out = in;
  for (int r = 0; r < in.num_ranks(); ++r) {
    const auto& src = in.ranks[r];
    for (const Action& a : src)
      if (is_comm(a.op))
        throw ScheduleError("insert_comms: rank " + std::to_string(r) + " already has " +
                            to_string(a));
    // Receives posted one compute action early: slot i holds the receives to post before src[i].
    std::vector<std::vector<Action>> early(src.size() + 1);
    for (std::size_t i = 0; i < src.size(); ++i) {
      Action recv;
      if (needs_recv(in, src[i], recv)) early[i == 0 ? 0 : i - 1].push_back(recv);
    }
    auto& dst = out.ranks[r];
    dst.clear();
    for (std::size_t i = 0; i < src.size(); ++i) {
      dst.insert(dst.end(), early[i].begin(), early[i].end());
      dst.push_back(src[i]);
      Action send;
      if (needs_send(in, src[i], send)) dst.push_back(send);
    }
  }
  return out;
}

Action matching_comm(const Action& c) {
  switch (c.op) {
    case Op::SendAct: return {c.stage + 1, Op::RecvAct, c.mb};
    case Op::RecvAct: return {c.stage - 1, Op::SendAct, c.mb};
    case Op::SendGrad: return {c.stage - 1, Op::RecvGrad, c.mb};
    case Op::RecvGrad: return {c.stage + 1, Op::SendGrad, c.mb};
    default: throw ScheduleError("matching_comm: " + to_string(c) + " is not a send or receive");
  }
}

int comm_peer(const Schedule& s, const Action& c) {
  const int peer_stage = matching_comm(c).stage;
  if (peer_stage < 0 || peer_stage >= s.num_stages())
    throw ScheduleError(to_string(c) + " talks to stage " + std::to_string(peer_stage) +
                        ", which does not exist (stages 0.." +
                        std::to_string(s.num_stages() - 1) + ")");
  return s.rank_of(peer_stage);
}

}  // namespace tpipe
