"""Train an SN-GAN generator: ``python -m mango.generators.train_sngan [options]``.

Hinge loss, Adam (beta1 = 0, beta2 = 0.9), spectral-norm ResNet discriminator,
an exponential moving average of the generator's weights (what is saved).

Data (nothing is downloaded):

* ``--data digits`` (default): scikit-learn digits, ``[N, 1, 16, 16]`` in ``[0, 1]``;
* ``--data photos``: crops of scikit-image's photos, ``[N, 3, 32, 32]`` in ``[0, 1]``;
* ``--data cifar10 --cifar-root PATH``: CIFAR-10 from disk, ``[N, 3, 32, 32]`` in ``[0, 1]``
  (paper-size model: ``--z-dim 128 --ch 256``, and a GPU).

Writes ``--out`` (generator EMA weights as ``{"state_dict", "config"}``, loadable
with ``weights_only=True`` through :func:`mango.generators.sngan.load_sngan`), a
PNG grid of samples and a JSON record of the run.

The embedded ``weights/sngan_digits.pt`` was made by::

    python -m mango.generators.train_sngan --data digits --ch 32 --batch 32 --steps 2500 --seed 0 \\
        --out generators/weights/sngan_digits.pt
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mango.data import cifar10, digits, photo_crops
from mango.recipes import data_arguments, seed_arguments, start_recipe

from .common import save_grid, save_weights, weights_dir
from .sngan import SNDiscriminator, SNGANGenerator


def _data(args: argparse.Namespace) -> torch.Tensor:
    if args.data == "digits":
        return digits("train", seed=args.seed)[0]
    if args.data == "photos":
        return photo_crops(args.n_photos, size=32, seed=args.seed)
    if args.data == "cifar10":
        if not args.cifar_root:
            raise SystemExit("--data cifar10 needs --cifar-root PATH (a cifar-10-batches-py folder or an ImageFolder tree)")
        return cifar10(args.cifar_root, "train", limit=args.limit)[0]
    raise SystemExit(f"unknown --data {args.data!r}; valid choices: digits, photos, cifar10")


@torch.no_grad()
def _ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m mango.generators.train_sngan", description=__doc__.split("\n")[0])
    seed_arguments(data_arguments(ap))
    ap.add_argument("--z-dim", type=int, default=None, help="latent size (digits default 32, else 128)")
    ap.add_argument("--ch", type=int, default=None, help="generator/discriminator width (digits 32, else 128)")
    ap.add_argument("--steps", type=int, default=None, help="generator steps (digits 2500, else 20000)")
    ap.add_argument("--n-dis", type=int, default=1, help="discriminator steps per generator step")
    ap.add_argument("--batch", type=int, default=None, help="batch size (digits 32, else 64)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved generator weights")
    ap.add_argument("--half", action="store_true", help="store weights as float16")
    ap.add_argument("--out", default=None, help="output .pt (default: generators/weights/sngan_<data>.pt)")
    args = ap.parse_args(argv)

    gen = start_recipe(args.seed, args.threads)
    small = args.data == "digits"
    out = Path(args.out) if args.out else weights_dir() / f"sngan_{args.data}.pt"
    x = _data(args)
    c, size = x.shape[1], x.shape[2]
    z_dim = args.z_dim or (32 if small else 128)
    ch = args.ch or (32 if small else 128)
    steps = args.steps or (2500 if small else 20000)
    args.batch = args.batch or (32 if small else 64)
    G = SNGANGenerator(z_dim=z_dim, ch=ch, image_size=size, out_channels=c)
    D = SNDiscriminator(ch=ch, image_size=size, in_channels=c)
    G_ema = copy.deepcopy(G).eval()
    optG = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.9))
    optD = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.0, 0.9))
    fixed_z = torch.randn(64, z_dim, generator=gen)
    from tqdm import tqdm

    G.train()
    D.train()
    t0 = time.perf_counter()
    hist = []
    bar = tqdm(range(steps), desc=f"sngan-{args.data}", unit="step")
    for step in bar:
        for _ in range(args.n_dis):
            real = x[torch.randint(0, len(x), (args.batch,), generator=gen)]
            with torch.no_grad():
                fake = G(torch.randn(args.batch, z_dim, generator=gen))
            d_loss = F.relu(1.0 - D(real)).mean() + F.relu(1.0 + D(fake)).mean()
            optD.zero_grad(set_to_none=True)
            d_loss.backward()
            optD.step()
        g_loss = -D(G(torch.randn(args.batch, z_dim, generator=gen))).mean()
        optG.zero_grad(set_to_none=True)
        g_loss.backward()
        optG.step()
        _ema(G_ema, G, args.ema if step > 200 else 0.0)
        hist.append((d_loss.detach().item(), g_loss.detach().item()))
        if step % 50 == 0 or step == steps - 1:
            m = np.mean(hist[-50:], axis=0)
            bar.set_postfix(d_loss=f"{m[0]:.3f}", g_loss=f"{m[1]:.3f}")
    wall = time.perf_counter() - t0
    G_ema.eval()
    final = np.mean(hist[-100:], axis=0)
    record = {
        "command": "python -m mango.generators.train_sngan " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "data": args.data, "seed": args.seed, "steps": steps, "n_dis": args.n_dis, "batch": args.batch,
        "lr": args.lr, "ema": args.ema, "threads": args.threads, "wall_seconds": round(wall, 1),
        "torch": str(torch.__version__),
        "final_loss_last100": {"d_hinge": float(final[0]), "g": float(final[1])},
        "model": G_ema.config,
    }
    save_weights(out, G_ema.state_dict(), half=args.half, model=G_ema.config, train=record)
    with torch.no_grad():
        samples = G_ema(fixed_z)
    save_grid(out.with_suffix(".png"), G_ema.to_uint8(samples), ncol=8, scale=3 if small else 2)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(json.dumps({"out": str(out), "png": str(out.with_suffix(".png")), "wall_seconds": record["wall_seconds"],
                      "final": record["final_loss_last100"]}, indent=2))
    return record


if __name__ == "__main__":
    main()
