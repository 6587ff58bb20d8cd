"""Why some silent ``spiking1`` channels of the paper SNN stay silent: a diagnostic, not a search.

For each channel (outside the search-quality benchmark: index not a multiple of 4) it

1. scores all 512 *textures* (uniform codes: one codebook entry at every position) with the
   target's graded readout and prints the best ones, in spikes' worth (1 = one spike);
2. counts the ``spiking0`` spikes each texture causes (over T = 32, all positions and channels) and
   prints the Spearman correlation of the channel's score with that count over the 512 textures
   (a channel held down by inhibition scores highest on the textures that leave spiking0 quiet);
3. with ``--climb R``, from the channel's best texture, takes the best of 256 single-position changes
   (4 random codes at each of the 64 positions) R times and prints the score after each round.

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_hard_channels.py \\
        --units 17 55 10 14 --climb 4        # 6 min 17 s on 2 cores, beside a test run

Results: ``experiments/results/search_quality_tuning.md`` (section "Session of 2026-11-27").
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

STRIDE = 4   # the benchmark's spiking1 stride (experiments/search_quality.toml)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, nargs="+", default=[17, 55, 10, 14], help="spiking1 channels")
    ap.add_argument("--climb", type=int, default=0, help="rounds of best-of-256 single changes (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random codes of the climb")
    args = ap.parse_args(argv)
    bench = [u for u in args.units if u % STRIDE == 0]
    if bench:
        ap.error(f"units {bench} are benchmark candidates (multiples of {STRIDE}); pick others")

    from scipy.stats import spearmanr

    from mango.config import build_objective, validate_config

    def objective(layer: str, unit: int):
        cfg = validate_config({"generator": {"name": "vqvae-cifar10"},
                               "target": {"name": "snn-cifar10", "layer": layer, "unit": unit, "T": 32},
                               "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 64})
        return build_objective(cfg)

    textures = np.repeat(np.arange(512)[:, None], 64, axis=1)            # [512, 64]: texture i at every position
    first = objective("spiking0", 0)
    with torch.no_grad():
        quiet = np.concatenate([first.target.spikes(first.images(textures[s:s + 64]))[0]
                                .reshape(len(textures[s:s + 64]), -1).sum(1).double().numpy()
                                for s in range(0, 512, 64)])              # spiking0 spikes per texture
    print(f"spiking0 spikes per texture over T = 32: fewest {quiet.min():.0f} (texture {int(quiet.argmin())}), "
          f"median {np.median(quiet):.0f}")
    for unit in args.units:
        obj = objective("spiking1", unit)
        y = obj(textures) * 800                                            # spikes' worth: 25 positions x T = 32
        top = np.argsort(-y)[:6]
        print(f"spiking1[{unit}]: best textures " + ", ".join(f"{int(i)} ({y[i]:.4f})" for i in top)
              + f"; {int((y >= 1).sum())} of 512 fire; Spearman(score, spiking0 spikes) = "
              f"{spearmanr(y, quiet)[0]:.3f}", flush=True)
        if args.climb:
            rng = np.random.default_rng(args.seed)
            best, yb, q = textures[top[0]].copy(), float(y[top[0]]), 1
            for r in range(args.climb):
                pos = np.repeat(np.arange(64), 4)
                kids = np.repeat(best[None], len(pos), 0)
                kids[np.arange(len(pos)), pos] = rng.integers(0, 512, size=len(pos))
                yk = obj(kids) * 800
                q += len(yk)
                if yk.max() > yb:
                    best, yb = kids[int(np.argmax(yk))].copy(), float(yk.max())
                print(f"  climb round {r + 1}: {q} queries, best {yb:.4f} (fired: {yb >= 1})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
