"""Train a VQ-VAE generator: ``python -m mango.generators.train_vqvae [options]``.

Data (nothing is downloaded):

* ``--data digits`` (default): scikit-learn digits, ``[N, 1, 16, 16]`` in ``[0, 1]``,
  sigmoid output; held-out test split for the reported error.
* ``--data photos``: random crops of scikit-image's bundled photos, ``[N, 3, 32, 32]``
  in ``[0, 1]``, sigmoid output.
* ``--data cifar10 --cifar-root PATH``: CIFAR-10 from disk (``cifar-10-batches-py``
  or an ImageFolder tree of PNGs), CIFAR-normalised like the paper (linear output).

Writes ``--out`` (``{"state_dict", "config"}``, loadable with ``weights_only=True``
through :func:`mango.generators.vqvae.load_vqvae`), a PNG of test originals (top
rows) over their reconstructions (bottom rows) and a JSON record of the run.

The embedded ``weights/vqvae_digits.pt`` was made by::

    python -m mango.generators.train_vqvae --data digits --steps 3000 --seed 0 \\
        --out generators/weights/vqvae_digits.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mango.data import CIFAR10_MEAN, CIFAR10_STD, cifar10, digits, photo_crops
from mango.recipes import data_arguments, seed_arguments, start_recipe

from .common import save_grid, save_weights, weights_dir
from .vqvae import VQVAE


def _data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train images, test images, model options) in the model's input space."""
    if args.data == "digits":
        xtr, _ = digits("train", seed=args.seed)
        xte, _ = digits("test", seed=args.seed)
        return xtr, xte, dict(in_channels=1, image_size=16, output="sigmoid")
    if args.data == "photos":
        x = photo_crops(args.n_photos + 512, size=32, seed=args.seed)
        return x[:-512], x[-512:], dict(in_channels=3, image_size=32, output="sigmoid")
    if args.data == "cifar10":
        if not args.cifar_root:
            raise SystemExit("--data cifar10 needs --cifar-root PATH (a cifar-10-batches-py folder or an ImageFolder tree)")
        xtr, _ = cifar10(args.cifar_root, "train", limit=args.limit)
        try:
            xte, _ = cifar10(args.cifar_root, "test", limit=2000)
        except FileNotFoundError:   # no test split on disk: hold out a tenth of train (<= 1000 images)
            if len(xtr) < 2:
                raise SystemExit(f"--data cifar10: only {len(xtr)} image(s) under {args.cifar_root!r}; need >= 2")
            hold = max(1, min(1000, len(xtr) // 10))
            xtr, xte = xtr[:-hold], xtr[-hold:]
        m = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        s = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        return (xtr - m) / s, (xte - m) / s, dict(in_channels=3, image_size=32, output="linear",
                                                  mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD))
    raise SystemExit(f"unknown --data {args.data!r}; valid choices: digits, photos, cifar10")


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero fill) for augmentation."""
    if max_shift <= 0:
        return x
    k, c, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + h, dx:dx + w]


@torch.no_grad()
def evaluate(model: VQVAE, x: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Hard-code reconstruction (encode -> nearest codes -> decode) error on ``x``."""
    model.eval()
    se, ae, n, used = 0.0, 0.0, 0, set()
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        codes = model.encode_codes(xb)
        r = model(codes)
        se += float(((r - xb) ** 2).sum())
        ae += float((r - xb).abs().sum())
        n += xb.numel()
        used.update(codes.flatten().tolist())
    return {"mse": se / n, "mae": ae / n, "codes_used": len(used)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m mango.generators.train_vqvae", description=__doc__.split("\n")[0])
    seed_arguments(data_arguments(ap))
    ap.add_argument("--hidden", type=int, default=None, help="main channels (digits default 64, else 128)")
    ap.add_argument("--res-hidden", type=int, default=32)
    ap.add_argument("--n-res", type=int, default=2)
    ap.add_argument("--embedding-dim", type=int, default=None, help="codebook vector size (digits 16, else 64)")
    ap.add_argument("--codebook", type=int, default=None, help="codebook size n (digits 32, else 512)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--shift", type=int, default=1, help="random translation augmentation (pixels)")
    ap.add_argument("--half", action="store_true", help="store weights as float16")
    ap.add_argument("--out", default=None, help="output .pt (default: generators/weights/vqvae_<data>.pt)")
    args = ap.parse_args(argv)

    gen = start_recipe(args.seed, args.threads)
    small = args.data == "digits"
    out = Path(args.out) if args.out else weights_dir() / f"vqvae_{args.data}.pt"
    xtr, xte, opts = _data(args)
    model = VQVAE(hidden=args.hidden or (64 if small else 128), res_hidden=args.res_hidden, n_res=args.n_res,
                  embedding_dim=args.embedding_dim or (16 if small else 64),
                  n_embeddings=args.codebook or (32 if small else 512), **opts)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr * 0.05)
    from tqdm import tqdm

    model.train()
    t0 = time.perf_counter()
    hist = []
    bar = tqdm(range(args.steps), desc=f"vqvae-{args.data}", unit="step")
    for step in bar:
        idx = torch.randint(0, len(xtr), (args.batch,), generator=gen)
        xb = _shift(xtr[idx], gen, args.shift)
        outp = model.training_step(xb, restart_dead=step < args.steps * 0.6 and step % 50 == 0)
        opt.zero_grad(set_to_none=True)
        outp["loss"].backward()
        opt.step()
        sched.step()
        hist.append((outp["mse"].detach().item(), outp["commit"].detach().item(), outp["perplexity"].item()))
        if step % 50 == 0 or step == args.steps - 1:
            m = np.mean(hist[-50:], axis=0)
            bar.set_postfix(mse=f"{m[0]:.4f}", commit=f"{m[1]:.4f}", ppl=f"{m[2]:.1f}")
    wall = time.perf_counter() - t0
    model.eval()
    train_eval = evaluate(model, xtr)
    test_eval = evaluate(model, xte)
    final = np.mean(hist[-100:], axis=0)
    record = {
        "command": "python -m mango.generators.train_vqvae " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "data": args.data, "seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
        "threads": args.threads, "wall_seconds": round(wall, 1), "torch": str(torch.__version__),
        "final_train_loss_last100": {"mse": float(final[0]), "commit": float(final[1]), "perplexity": float(final[2])},
        "train_recon": train_eval, "test_recon": test_eval, "model": model.config,
    }
    save_weights(out, model.state_dict(), half=args.half, model=model.config, train=record)
    out_png = out.with_suffix(".png")
    k = 16
    with torch.no_grad():
        rec = model(model.encode_codes(xte[:k]))
    u = model.to_uint8(torch.cat([xte[:k], rec]))  # undoes the CIFAR normalisation when there is one
    save_grid(out_png, u, ncol=8, scale=4 if small else 2)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(json.dumps({"out": str(out), "png": str(out_png), "wall_seconds": record["wall_seconds"],
                      "final": record["final_train_loss_last100"], "test_recon": test_eval}, indent=2))
    return record


if __name__ == "__main__":
    main()
