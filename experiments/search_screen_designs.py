"""Screen start-design families on the paper pipeline, on units OUTSIDE the search-quality benchmark.

For the units of ``spiking1`` / ``spiking2`` / the outputs that never fire on 100 random codes
(``numpy.random.default_rng(12345)``, as in ``experiments/search_tune.py``) and whose index is not
a multiple of the benchmark's stride (4 / 5 / 3, ``experiments/search_quality.toml``), it reports how
many fire on some code of each design family, and the median over those units of the best
*late peak* (max over the second half of the presentation and over a channel's positions of the
membrane; threshold 1). No search runs; every unit of the layer is scored at once.

Families (512 codes each unless said; ``--seed`` fixes the random ones):

* ``natural``: the elite optimizer's natural-image starts (40 codes, :mod:`mango.optimizers.starts`);
* ``uniform``: every codebook entry at all 64 positions (flat textures);
* ``random``: codes drawn uniformly at random;
* ``two-tone``: a random rectangle of one entry on a background of another (an edge and corners);
* ``stripes``: two entries in stripes or a checkerboard of period 1-3 code positions.

Then the choice of the elite design's 64 uniform codes out of 512: 20 random draws (the
default) against farthest-point subsets in three feature spaces (the codebook vectors, the decoded
image pooled to 3 x 8 x 8, its mean colour).

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_screen_designs.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mango import registry
from mango.optimizers.starts import natural_start_codes
from search_tune import BENCH_STRIDE    # the benchmark's candidate strides: their units are left out


def families(sp, gen, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The design families as int codes ``[m, 64]`` (8 x 8 grid, row-major)."""
    n, d = int(sp.n), int(sp.d)
    h = w = int(round(d ** 0.5))
    yy, xx = np.mgrid[:h, :w]
    two, stripes = [], []
    for _ in range(512):
        a, b = rng.integers(n, size=2)
        c = np.full((h, w), a)
        bh, bw = rng.integers(1, h, size=2)
        y0, x0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        c[y0:y0 + bh, x0:x0 + bw] = b
        two.append(c.ravel())
        per, ori = int(rng.integers(1, 4)), int(rng.integers(3))
        mask = [(yy // per) % 2, (xx // per) % 2, ((yy + xx) // per) % 2][ori]
        stripes.append(np.where(mask == 1, a, b).ravel())
    return {"natural": natural_start_codes(gen), "uniform": np.repeat(np.arange(n)[:, None], d, 1),
            "random": sp.sample(rng, 512), "two-tone": np.asarray(two), "stripes": np.asarray(stripes)}


def decode(gen, sp, codes: np.ndarray) -> torch.Tensor:
    """Images ``[m, 3, 32, 32]`` of ``codes [m, d]`` (decoded once, then scored for every layer)."""
    with torch.no_grad():
        return torch.cat([gen(sp.decode(codes[i:i + 64])) for i in range(0, len(codes), 64)])


def layer_stats(target, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Spikes ``[m, units]`` (summed over a channel's positions) and late peak ``[m, units]`` (max
    over positions) of the target's whole layer for ``images [m, 3, 32, 32]``."""
    N, L = [], []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            _, st = target.stats(images[i:i + 64])
            k, u = st.n_spikes.shape[:2]
            N.append(st.n_spikes.reshape(k, u, -1).sum(-1))
            L.append(st.late_peak.reshape(k, u, -1).amax(-1))
    return torch.cat(N).numpy(), torch.cat(L).numpy()


def farthest_points(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` rows of ``X [m, f]`` by greedy farthest-point sampling (standardised features)."""
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    idx = [int(np.random.default_rng(seed).integers(len(X)))]
    dist = ((X - X[idx[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        j = int(dist.argmax())
        idx.append(j)
        dist = np.minimum(dist, ((X - X[j]) ** 2).sum(1))
    return np.asarray(idx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7, help="seed of the random families")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    gen = registry.create("generator", "vqvae-cifar10", {})
    sp = gen.space
    fam = families(sp, gen, np.random.default_rng(args.seed))
    images = {name: decode(gen, sp, C) for name, C in fam.items()}
    probe = decode(gen, sp, sp.sample(np.random.default_rng(12345), 100))
    U, imgs = fam["uniform"], images["uniform"]
    feats = {"codebook vectors": np.asarray(gen.code_vectors(), dtype=np.float64),
             "decoded 3x8x8": torch.nn.functional.avg_pool2d(imgs, 4).reshape(len(U), -1).numpy(),
             "mean colour": imgs.mean((2, 3)).numpy()}
    for layer, stride in BENCH_STRIDE.items():
        t = registry.create("target", "snn-cifar10", {"layer": layer, "unit": 0, "T": 32})
        n0, _ = layer_stats(t, probe)
        silent = [u for u in range(n0.shape[1]) if n0[:, u].sum() == 0 and u % stride != 0]
        print(f"\n{layer}: {len(silent)} silent non-benchmark units")
        print("| family | codes | silent units that fire | median best late peak |\n| --- | --- | --- | --- |")
        res = {}
        for name, C in fam.items():
            res[name] = layer_stats(t, images[name])
            ns, lp = res[name]
            print(f"| {name} | {len(C)} | {(ns[:, silent] > 0).any(0).sum()}/{len(silent)} | "
                  f"{np.median(lp[:, silent].max(0)):.2f} |")
        ns, lp = res["uniform"]

        def cover(idx):
            return int((ns[idx][:, silent] > 0).any(0).sum()), float(np.median(lp[idx][:, silent].max(0)))

        draws = [cover(np.random.default_rng(s).choice(len(U), 64, replace=False)) for s in range(20)]
        print(f"64 of the 512 uniform codes, 20 random draws: fire {np.mean([c for c, _ in draws]):.1f} "
              f"(min {min(c for c, _ in draws)}, max {max(c for c, _ in draws)}), median late peak "
              f"{np.mean([m for _, m in draws]):.2f}")
        for name, X in feats.items():
            fp = [cover(farthest_points(X, 64, s)) for s in range(5)]
            print(f"64 by farthest points in {name} (5 starts): fire {[c for c, _ in fp]}, median late peak "
                  f"{np.mean([m for _, m in fp]):.2f}")
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
