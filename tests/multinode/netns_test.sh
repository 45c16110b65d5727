#!/bin/bash
# Two machines on one: network namespaces A and B joined by a veth pair (10.77.0.1 and .2), one
# tpipe node in each (2 ranks each: pp 2 x dp 2, the GPT's tied embedding across the stages).
#   1. the two-node run's losses equal a one-node run's, step by step;
#   2. node 1 killed mid-run: node 0 stops with an error naming node 1 and its ranks;
#   3. node 1 never started: node 0 stops after --timeout naming the ranks that never arrived.
# Needs root and `ip netns` (make test runs it as root); otherwise it says why and is skipped.
# Usage: netns_test.sh TPIPE_BINARY
set -u
TPIPE=$(realpath "$1")
SKIP=77
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
  echo "skipped: network namespaces need root and iproute2's ip"; exit $SKIP
fi
A=tpipe-a-$$ B=tpipe-b-$$ VA=tpva$$ VB=tpvb$$
WORK=$(mktemp -d)
cleanup() { ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
if ! ip netns add "$A" 2>/dev/null || ! ip netns add "$B" || ! ip link add "$VA" type veth peer name "$VB"; then
  echo "skipped: cannot create network namespaces or a veth pair here"; exit $SKIP
fi
ip link set "$VA" netns "$A" && ip link set "$VB" netns "$B" &&
  ip -n "$A" addr add 10.77.0.1/24 dev "$VA" && ip -n "$B" addr add 10.77.0.2/24 dev "$VB" &&
  ip -n "$A" link set "$VA" up && ip -n "$B" link set "$VB" up &&
  ip -n "$A" link set lo up && ip -n "$B" link set lo up || { echo "FAIL: network set-up"; exit 1; }

cd "$WORK"
MODEL="--layers 2 --dim 32 --heads 2 --seq-len 16 --microbatch-size 2 --microbatches 4 --stages 2 --dp 2"
RUN="$MODEL --checkpoints - --sample-chars 0 --eval-every 1000"
NODE="--nnodes 2 --master-addr 10.77.0.1 --master-port 29500"
fail() { echo "FAIL: $1"; shift; for f in "$@"; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
losses() { sed -e 's/.*"loss":\([^,]*\),.*/\1/' "$1"; }

# 1. Two nodes equal one.
"$TPIPE" train $RUN --steps 6 --timeout 30 --out one > one.log 2>&1 || fail "the one-node run failed" one.log
ip netns exec "$A" "$TPIPE" train $RUN --steps 6 --timeout 30 $NODE --node-rank 0 --out a > a.log 2>&1 &
NODE0=$!
ip netns exec "$B" "$TPIPE" train $RUN --steps 6 --timeout 30 $NODE --node-rank 1 --out b > b.log 2>&1 ||
  fail "node 1 failed" b.log a.log
wait $NODE0 || fail "node 0 failed" a.log b.log
[ "$(losses a/metrics.jsonl)" = "$(losses one/metrics.jsonl)" ] ||
  fail "the two-node losses differ from the one-node run's: $(losses a/metrics.jsonl | tr '\n' ' ') vs $(losses one/metrics.jsonl | tr '\n' ' ')"
grep -q "node 1's ranks 2 to 3 finished; node 0 shows the summary" b.log || fail "node 1 did not say it finished" b.log
echo "ok: two nodes in two namespaces train as one node does ($(losses a/metrics.jsonl | wc -l) steps, equal losses)"

# 2. Node 1 dies mid-run.
ip netns exec "$A" "$TPIPE" train $RUN --steps 100000 --timeout 20 $NODE --node-rank 0 --out a2 > a2.log 2>&1 &
NODE0=$!
ip netns exec "$B" "$TPIPE" train $RUN --steps 100000 --timeout 20 $NODE --node-rank 1 --out b2 > b2.log 2>&1 &
NODE1=$!
for _ in $(seq 1 600); do [ "$(cat a2/metrics.jsonl 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.1; done
[ "$(cat a2/metrics.jsonl 2>/dev/null | wc -l)" -ge 3 ] || fail "the run did not get going" a2.log b2.log
kill -KILL $NODE1; wait $NODE1 2>/dev/null
KILLED=$(date +%s%N)
wait $NODE0; CODE=$?
TOOK=$(( ($(date +%s%N) - KILLED) / 1000000 ))
[ $CODE -ne 0 ] || fail "node 0 exited 0 after node 1 died" a2.log
grep -q "is on node 1 (ranks 2 to 3): that node died, failed or cannot be reached" a2.log ||
  fail "node 0's error does not name node 1" a2.log
echo "ok: node 1 killed, node 0 stopped ${TOOK} ms later: $(grep '^tpipe train: rank' a2.log)"

# 3. Node 1 never starts.
START=$(date +%s)
ip netns exec "$A" "$TPIPE" train $RUN --steps 5 --timeout 5 $NODE --node-rank 0 --out a3 > a3.log 2>&1 &&
  fail "node 0 succeeded alone" a3.log
grep -q "ranks 2, 3 (node 1) never arrived within 5 s: not started, or they cannot reach it" a3.log ||
  fail "node 0's error does not name the missing ranks" a3.log
echo "ok: node 1 never started, node 0 stopped after $(( $(date +%s) - START )) s naming ranks 2, 3 (node 1)"
