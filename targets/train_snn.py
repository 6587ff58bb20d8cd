"""Recipe: train the embedded digits SNN (``snn-digits``) with surrogate gradients.

    python -m mango.targets.train_snn [--epochs 30] [--T 16] [--seed 0] [--threads 1] [--out DIR]

Data: :func:`mango.generators.data.digits` (``[N, 1, 16, 16]`` in [0, 1], fixed
train/test split), presented as a static image at each of ``T`` steps. snnTorch
``Leaky`` neurons with the arctan surrogate gradient (snnTorch's default),
backpropagation through time over the step loop, loss = cross-entropy of the
read-out spike counts. Test accuracy is measured with the exact fast path.
Writes ``snn_digits.pt`` and ``snn_digits.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mango.generators.data import digits

from .digits import SNN_FILE, SNN_T, WEIGHTS_DIR, build_digits_snn
from .snn_fast import FastSNN
from .spiking import reset_states
from .train_cnn import shift


def counts(net: torch.nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """Read-out spike counts ``[B, 10]`` from the snnTorch step loop (differentiable)."""
    reset_states(net)
    total = 0
    for _ in range(T):
        total = total + net(x)
    reset_states(net)
    return total


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> float:
    net.eval()
    with torch.no_grad():
        c, _ = FastSNN(net, backend="torch").run(x, T)
        # ties broken by the lowest index, as argmax does
        return float((c.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--T", type=int, default=SNN_T)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    net = build_digits_snn()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    t0 = time.time()
    bar = tqdm(range(a.epochs), desc="snn-digits")
    for _ in bar:
        net.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), a.batch_size):
            idx = perm[i:i + a.batch_size]
            c = counts(net, shift(xtr[idx], gen), a.T)
            loss = F.cross_entropy(c, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.time() - t0
    meta = {"model": "snn-digits", "T": a.T, "test_accuracy": accuracy(net, xte, yte, a.T),
            "train_accuracy": accuracy(net, xtr, ytr, a.T), "epochs": a.epochs, "seed": a.seed,
            "threads": a.threads, "wall_seconds": round(wall, 1),
            "command": "python -m mango.targets.train_snn " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__}
    a.out.mkdir(parents=True, exist_ok=True)
    reset_states(net)
    torch.save(net.state_dict(), a.out / SNN_FILE)
    (a.out / SNN_FILE.replace(".pt", ".json")).write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return meta


if __name__ == "__main__":
    main()
