# The PyTorch side of tests/cli/script_oracle_cli_test.cpp (Debian's /usr/bin/python3, torch 1.13).
#
#   script_oracle.py make DIR KIND
#       writes DIR/model.pt (scripted, float64) and DIR/data.pt
#   script_oracle.py train DIR OPT STEPS TRAINED...
#       trains DIR/model.pt on DIR/data.pt in a plain loop (OPT sgd: lr 0.1, momentum 0.9; adamw: lr 0.01,
#       weight decay 0.1), prints each step's loss ("step N loss X"), then compares every file DIR/TRAINED
#       (tpipe's exports) with the trained model: prints the largest relative difference,
#       max |a - b| / max |b|, of every parameter ("TRAINED parameter NAME X") and of the outputs on the
#       data's inputs ("TRAINED outputs X")
#
# KIND: "embedding" (token ids -> classes per token, cross_entropy), "tuple" (children pass a tuple,
# mse); and models tpipe must refuse: "arithmetic" (forward computes between children), "int-arg"
# (a child taking an int).
import sys
import torch
import torch.nn.functional as F
from typing import Tuple

ROWS, TOKENS, VOCAB, CLASSES = 10, 5, 12, 4  # 10 rows: 3 or 4 micro-batches do not divide them


class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, 8)
        self.fc = torch.nn.Linear(8, 16)
        self.act = torch.nn.GELU()
        self.ln = torch.nn.LayerNorm(16)
        self.out = torch.nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.out(self.ln(self.act(self.fc(self.emb(x)))))


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.value = torch.nn.Linear(8, 16)
        self.gate = torch.nn.Linear(8, 16)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.value(x)), torch.sigmoid(self.gate(x))


class Gated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = torch.nn.LayerNorm(16)

    def forward(self, h, g):
        return self.ln(h * g)


class TupleNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.pair = Pair()
        self.gated = Gated()
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x):
        h, g = self.pair(self.embed(x))
        return self.out(self.gated(h, g))


class Arithmetic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.b(self.a(x) * 2)


class Repeat(torch.nn.Module):
    def forward(self, x, times: int):
        return x * times


class IntArg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.repeat = Repeat()

    def forward(self, x):
        return self.repeat(self.a(x), 2)


def make(d, kind):
    torch.manual_seed(0)
    net = {"embedding": Embedding, "tuple": TupleNet, "arithmetic": Arithmetic, "int-arg": IntArg}[kind]()
    torch.jit.script(net.double()).save(f"{d}/model.pt")
    if kind == "embedding":
        data = (torch.randint(VOCAB, (ROWS, TOKENS)), torch.randint(CLASSES, (ROWS, TOKENS)))
    else:
        data = (torch.randn(ROWS, 4, dtype=torch.float64), torch.randn(ROWS, 3, dtype=torch.float64))
    torch.save(data, f"{d}/data.pt")


def loss_of(out, y):
    # Integer targets are classes per token: tpipe's cross_entropy flattens [B,T,C] against [B,T].
    if y.dtype == torch.int64:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.mse_loss(out, y)


def largest_relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def train(d, optimizer, steps, trained):
    m = torch.jit.load(f"{d}/model.pt")
    x, y = torch.load(f"{d}/data.pt")
    if optimizer == "adamw":
        opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = loss_of(m(x), y)
        loss.backward()
        opt.step()
        print(f"step {step} loss {loss.item()!r}")
    theirs = dict(m.named_parameters())
    with torch.no_grad():
        for file in trained:
            ours = torch.jit.load(f"{d}/{file}")
            got = dict(ours.named_parameters())
            assert sorted(got) == sorted(theirs), f"{file}: parameters {sorted(got)}, not {sorted(theirs)}"
            for name, p in theirs.items():
                print(f"{file} parameter {name} {largest_relative(got[name], p)!r}")
            print(f"{file} outputs {largest_relative(ours(x), m(x))!r}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        train(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
