#!/usr/bin/python3
"""Python/PyTorch peers of tpipe on the reference workload W1 (see bench/pipeline_bench.cpp).

`make bench` runs this file next to tpipe_bench so tpipe's step times can be compared with
plain PyTorch doing the same work: an MLP of L x [Linear(W, W) + ReLU], batch B, m micro-batches,
mse_loss (mean), SGD lr 1e-3, float32, one intra-op thread per process.

  --mode single   one process, whole batch at once
  --mode serial   one process, the m micro-batches one after another, one optimizer step
  --mode pipe     torch.distributed.pipeline.sync.Pipe, 2 CPU partitions, one process (Pipe
                  keeps one worker thread per device, so both partitions share one thread)
  --mode gpipe    GPipe over torch.distributed Gloo point-to-point, 2 processes started by a
                  torchrun-style launcher (RANK, WORLD_SIZE=2, MASTER_ADDR, MASTER_PORT)

Prints one line `BENCH {json}` (rank 0 only). `--check` instead verifies in float64 on a small
size that one step gives the same weights as the single-process step, and exits non-zero if not.
"""
import argparse
import json
import os
import socket
import sys
import time

# One BLAS/OpenMP thread unless the caller chose otherwise (must precede the torch import).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print("BENCH-SKIP python3-torch is not installed")
    sys.exit(0)

LR = 1e-3
CHECK_WIDTH, CHECK_BATCH, CHECK_TOL = 32, 16, 1e-10


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", required=True, choices=["single", "serial", "pipe", "gpipe"])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--check", action="store_true", help="verify one float64 step instead of timing")
    a = p.parse_args()
    if a.layers < 2 or a.steps < 1 or a.warmup < 0 or a.microbatches < 1:
        p.error("need --layers >= 2, --steps >= 1, --warmup >= 0, --microbatches >= 1")
    if a.batch % a.microbatches or (a.check and CHECK_BATCH % a.microbatches):
        p.error("--microbatches must divide the batch (and %d for --check)" % CHECK_BATCH)
    return a


def build(layers, width, batch, dtype):
    """Seeded like the C++ bench: seed 0, all layers, then x and y. Same on every rank."""
    torch.manual_seed(0)
    model = [nn.Sequential(nn.Linear(width, width), nn.ReLU()).to(dtype) for _ in range(layers)]
    x, y = torch.randn(batch, width).to(dtype), torch.randn(batch, width).to(dtype)
    return model, x, y


def halves(layers):
    h = len(layers) // 2
    return nn.Sequential(*layers[:h]), nn.Sequential(*layers[h:])


def sgd(module):
    return torch.optim.SGD(module.parameters(), lr=LR)


def step_single(model, opt, x, y, m):
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def step_serial(model, opt, x, y, m):
    opt.zero_grad()
    for xk, yk in zip(x.chunk(m), y.chunk(m)):
        (F.mse_loss(model(xk), yk) / m).backward()
    opt.step()


def step_pipe(pipe, opt, x, y, m):
    opt.zero_grad()
    F.mse_loss(pipe(x).local_value(), y).backward()  # Pipe returns an RRef
    opt.step()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rpc():
    """Pipe needs RPC. A private single-worker group on a free port: the launcher's
    MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE (if any) are neither used nor changed."""
    from torch.distributed import rpc
    opts = rpc.TensorPipeRpcBackendOptions(init_method="tcp://127.0.0.1:%d" % free_port())
    rpc.init_rpc("peers0", rank=0, world_size=1, rpc_backend_options=opts)
    return rpc


def make_pipe(layers, m):
    from torch.distributed.pipeline.sync import Pipe
    return Pipe(nn.Sequential(*halves(layers)), chunks=m, checkpoint="never")


# GPipe over Gloo, p = 2, classic: each rank runs all m forwards, then all m backwards in reverse
# order (tpipe's `gpipe` runs its backwards in forward order; with both ranks using the same order
# the critical path is identical, (m + p - 1) slots). Immediate backward on the last stage is no
# faster for p = 2 and would need rank 0 to run its backwards in forward order to keep up.
# Tags: k for micro-batch k's activation, m + k for its gradient, so posting order never matters.
def gpipe_first(stage, xs):
    m = len(xs)
    grads = [torch.empty_like(x) for x in xs]  # stage output has the input's shape (W -> W)
    recvs = [dist.irecv(g, 1, tag=m + k) for k, g in enumerate(grads)]  # posted up front
    outs, sends = [], []
    for k, x in enumerate(xs):
        outs.append(stage(x))
        sends.append(dist.isend(outs[-1].detach(), 1, tag=k))
    for k in reversed(range(m)):
        recvs[k].wait()
        outs[k].backward(grads[k])
    for s in sends:
        s.wait()


def gpipe_last(stage, ys):
    m = len(ys)
    acts = [torch.empty_like(y) for y in ys]
    recvs = [dist.irecv(acts[0], 0, tag=0)]
    losses, sends = [], []
    for k in range(m):
        if k + 1 < m:  # the next transfer overlaps this micro-batch's compute
            recvs.append(dist.irecv(acts[k + 1], 0, tag=k + 1))
        recvs[k].wait()
        losses.append(F.mse_loss(stage(acts[k].requires_grad_()), ys[k]) / m)
    for k in reversed(range(m)):
        losses[k].backward()
        sends.append(dist.isend(acts[k].grad, 0, tag=m + k))
    for s in sends:
        s.wait()


def step_gpipe(stage, opt, x, y, m):
    opt.zero_grad()
    if dist.get_rank() == 0:
        gpipe_first(stage, list(x.chunk(m)))
    else:
        gpipe_last(stage, list(y.chunk(m)))
    opt.step()


STEPS = {"single": step_single, "serial": step_serial, "pipe": step_pipe, "gpipe": step_gpipe}


def time_steps(step, warmup, steps):
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    timed = times[warmup:]
    return {"step_s": sorted(timed)[len(timed) // 2], "steps": timed}  # median as the C++ side


def params_of(modules):
    return [p.detach().clone() for mod in modules for p in mod.parameters()]


def max_rel_err(after, ref):
    return max(((a - r).norm() / r.norm()).item() for a, r in zip(after, ref))


def check_step(args, kind, part=None):
    """The weights after one float64 step of `kind` on a small size, of the layers in `part`
    (0 or 1: that half; None: all). The reference is `single` on the whole model."""
    m = args.microbatches
    layers, x, y = build(args.layers, CHECK_WIDTH, CHECK_BATCH, torch.float64)
    mine = layers if part is None else list(halves(layers)[part])
    if kind == "pipe":
        model = make_pipe(layers, m)
    else:
        model = nn.Sequential(*(mine if kind == "gpipe" else layers))
    STEPS[kind](model, sgd(model), x, y, m)
    return params_of(mine)


def check(args):
    part = dist.get_rank() if args.mode == "gpipe" else None
    ref = check_step(args, "single", part)
    ok = True
    for kind in ["gpipe"] if args.mode == "gpipe" else ["serial", "pipe"]:
        after = check_step(args, kind, part)
        err = max_rel_err(after, ref)
        good = len(after) == len(ref) and err <= CHECK_TOL
        ok = ok and good
        where = "" if part is None else " (rank %d's half)" % part
        print("CHECK %s %s vs single%s: max relative error of the weights %.3g" % (
            "ok" if good else "FAIL", kind, where, err), flush=True)
    return ok


def bench(args):
    m, step = args.microbatches, STEPS[args.mode]
    layers, x, y = build(args.layers, args.width, args.batch, torch.float32)
    if args.mode == "gpipe":
        model = halves(layers)[dist.get_rank()]
    else:
        model = make_pipe(layers, m) if args.mode == "pipe" else nn.Sequential(*layers)
    opt = sgd(model)
    out = time_steps(lambda: step(model, opt, x, y, m), args.warmup, args.steps)
    out.update(mode=args.mode, layers=args.layers, width=args.width, batch=args.batch,
               microbatches=m, warmup=args.warmup, threads=torch.get_num_threads(),
               processes=dist.get_world_size() if args.mode == "gpipe" else 1,
               torch=torch.__version__)
    return out


def main():
    args = parse_args()
    torch.set_num_threads(1)
    rpc = None
    if args.mode == "gpipe":
        dist.init_process_group("gloo", init_method="env://")
        if dist.get_world_size() != 2:
            sys.exit("peers.py: --mode gpipe needs WORLD_SIZE=2, got %d" % dist.get_world_size())
    if args.mode == "pipe" or (args.check and args.mode != "gpipe"):
        rpc = start_rpc()
    try:
        if args.check:
            ok = check(args)
        else:
            out = bench(args)
            ok = True
            if args.mode != "gpipe" or dist.get_rank() == 0:
                print("BENCH " + json.dumps(out), flush=True)
    finally:
        if rpc is not None:
            rpc.shutdown()
        if args.mode == "gpipe":
            dist.destroy_process_group()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
