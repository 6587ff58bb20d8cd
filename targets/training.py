"""Shared pieces of the digits training recipes (``train_cnn``, ``train_snn``); the set-up common to
every recipe (seed, threads) is :mod:`mango.recipes`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mango.recipes import seed_arguments

__all__ = ["shift", "recipe_parser", "fit", "save_recipe"]


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


def recipe_parser(description: str, epochs: int, out: Path) -> argparse.ArgumentParser:
    """The flags every recipe takes: epochs, batch size, lr, seed, threads, output folder."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    seed_arguments(ap)
    ap.add_argument("--out", type=Path, default=out)
    return ap


def fit(model: torch.nn.Module, logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
        a: argparse.Namespace, gen: torch.Generator, desc: str) -> float:
    """Adam + cosine schedule, cross-entropy of ``logits(shifted batch)``; returns wall seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    t0 = time.time()
    bar = tqdm(range(a.epochs), desc=desc)
    for _ in bar:
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), a.batch_size):
            idx = perm[i:i + a.batch_size]
            loss = F.cross_entropy(logits(shift(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return time.time() - t0


def save_recipe(state: dict[str, Any], meta: dict[str, Any], a: argparse.Namespace, filename: str,
                module: str, argv: list[str] | None) -> dict[str, Any]:
    """Write the state dict and a JSON record (with the command, seed, threads, torch version)."""
    meta = {**meta, "seed": a.seed, "threads": a.threads,
            "command": f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__}
    a.out.mkdir(parents=True, exist_ok=True)
    torch.save(state, a.out / filename)
    (a.out / filename.replace(".pt", ".json")).write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return meta
