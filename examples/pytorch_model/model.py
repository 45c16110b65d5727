# A small model defined in PyTorch, scripted for tpipe, with a batch of data; then the same
# training as a plain PyTorch loop, to compare with what tpipe prints.
#
#   /usr/bin/python3 examples/pytorch_model/model.py          # writes model.pt, data.pt
#   tpipe train-script --model model.pt --data data.pt --loss mse --stages 2 --steps 5 \
#       --lr 0.1 --momentum 0.9 --export trained.pt
#   /usr/bin/python3 examples/pytorch_model/model.py --check trained.pt
# `--check trained.pt adamw` trains with AdamW (lr 0.01, weight decay 0.1) instead, as
# `tpipe train-script --optimizer adamw --lr 0.01 --weight-decay 0.1` does.
import sys
import torch


class Net(torch.nn.Module):
    # tpipe's layers are the top-level children, applied in order by forward.
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(4, 16)
        self.act = torch.nn.Tanh()
        self.ln = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.fc(self.ln(self.act(self.emb(x)))))


def train_in_python(optimizer, steps=5):
    m = torch.jit.load("model.pt")
    x, y = torch.load("data.pt")
    if optimizer == "adamw":
        opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
        print(f"python step {step + 1}  loss {loss.item()!r}")
    return m


if len(sys.argv) >= 3 and sys.argv[1] == "--check":
    ours = torch.jit.load(sys.argv[2])
    theirs = train_in_python(sys.argv[3] if len(sys.argv) > 3 else "sgd")
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    print("largest difference of the outputs:", (ours(x) - theirs(x)).abs().max().item())
else:
    torch.manual_seed(0)
    torch.jit.script(Net().double()).save("model.pt")
    torch.save((torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)), "data.pt")
    print("wrote model.pt and data.pt")
