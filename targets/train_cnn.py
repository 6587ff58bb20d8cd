"""Recipe: train the embedded digits CNN (``cnn-digits``).

    python -m mango.targets.train_cnn [--epochs 20] [--seed 0] [--threads 1] [--out DIR]

Data: :func:`mango.generators.data.digits` (``[N, 1, 16, 16]`` in [0, 1], fixed
train/test split). Adam, cross-entropy, light augmentation (random shifts of up
to 1 pixel). Writes ``cnn_digits.pt`` (state dict) and ``cnn_digits.json``
(accuracy, command, seed, wall time) to ``--out`` (default ``targets/weights``).
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

from .digits import CNN_FILE, WEIGHTS_DIR, build_digits_cnn


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translation of the whole batch by up to ``max_shift`` pixels (zero padding)."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    x = torch.roll(x, (dy, dx), dims=(2, 3))
    if dy > 0:
        x[:, :, :dy] = 0
    elif dy < 0:
        x[:, :, dy:] = 0
    if dx > 0:
        x[:, :, :, :dx] = 0
    elif dx < 0:
        x[:, :, :, dx:] = 0
    return x


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
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
    model = build_digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    t0 = time.time()
    bar = tqdm(range(a.epochs), desc="cnn-digits")
    for _ in bar:
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), a.batch_size):
            idx = perm[i:i + a.batch_size]
            loss = F.cross_entropy(model(shift(xtr[idx], gen)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.time() - t0
    meta = {"model": "cnn-digits", "test_accuracy": accuracy(model, xte, yte),
            "train_accuracy": accuracy(model, xtr, ytr), "epochs": a.epochs, "seed": a.seed,
            "threads": a.threads, "wall_seconds": round(wall, 1),
            "command": "python -m mango.targets.train_cnn " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__}
    a.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), a.out / CNN_FILE)
    (a.out / CNN_FILE.replace(".pt", ".json")).write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return meta


if __name__ == "__main__":
    main()
