"""Diagnostic: which moves, if any, lift an output neuron out of the plateau where the default stops?

On a tuning output neuron of the paper SNN (default ``final_spiking[1]``: never a benchmark or
held-out unit), ``elite`` (the default optimizer when this was written) runs 1,000 queries (seed 0). From its best code,
``--n`` children of each move kind are scored:

* ``point``: 1-3 positions take uniformly random codebook values (elite's point move, without its
  learned position weights);
* ``copy``: a rectangle of the 8 x 8 code grid (1-4 x 1-4) is copied to another place, mirrored
  left-right half of the time (a compositional move elite does not have);
* ``colour``: the decoded image's colour channels get a random gain (log-normal, SD 0.4) and offset
  (normal, SD 0.6 in the generator's normalised space) and are encoded back to codes through the
  VQ-VAE encoder (a whole-image move elite does not have).

For each kind: how many children beat the parent, and how many gain at least one spike. For the
point children it also reads the unit's input current (its "drive": the ReLU'd linear2 output fed to
the ``final_spiking`` neuron, averaged over the T steps, from a plain snnTorch step loop) and gives
the Spearman correlation between the graded readout's tie term and that drive among children with
the parent's spike count, i.e. how well the readout ranks images that differ only below one spike.

    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_moves.py --unit 1   # ~2 min on 2 cores

``--budget 5000`` asks whether the plateau is only a matter of budget (the best so far is printed
along the way).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from mango.config import build_objective, validate_config
from mango.loop import maximize
from search_output_needles import step_loop   # the same plain step loop (this folder)


def drive(objective, codes: np.ndarray, unit: int) -> np.ndarray:
    """Mean over T of the input current of ``final_spiking[unit]`` for each code ``[k]``."""
    return step_loop(objective, codes)["cur"][:, :, unit].contiguous().mean(0).double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", type=int, default=1, help="output neuron (final_spiking) of the paper SNN")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=300, help="children per move kind")
    ap.add_argument("--budget", type=int, default=1000,
                    help="elite's queries before the moves are scored (its best so far is printed at 250, 500, "
                         "1,000 and every 1,000 after)")
    args = ap.parse_args()
    objective = build_objective(validate_config({
        "generator": {"name": "vqvae-cifar10"},
        "target": {"name": "snn-cifar10", "layer": "final_spiking", "unit": args.unit, "T": 32},
        "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 50}))
    T = int(objective.target.T)
    gen = objective.generator
    t0 = time.perf_counter()
    res = maximize(objective, "elite", budget=args.budget, seed=args.seed, batch_size=50)
    best = np.asarray(res.best_so_far, dtype=np.float64) * T
    marks = [q for q in (250, 500, *range(1000, args.budget + 1, 1000)) if q <= len(best)]
    print("elite's best so far (spikes + tie) at query " + ", ".join(f"{q}: {best[q - 1]:.2f}" for q in marks))
    parent = np.asarray(res.best_code, dtype=np.int64)
    h, w = gen.latent_shape
    n_codes = int(objective.space.n)
    rng = np.random.default_rng(args.seed)

    def point() -> np.ndarray:
        c = parent.copy()
        pos = rng.choice(parent.size, int(rng.integers(1, 4)), replace=False)
        c[pos] = rng.integers(0, n_codes, len(pos))
        return c

    def copy() -> np.ndarray:
        g = parent.reshape(h, w)
        while True:
            bh, bw = (int(v) for v in rng.integers(1, 5, 2))
            y0, x0, y1, x1 = (int(v) for v in (rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1),
                                               rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)))
            if (y0, x0) != (y1, x1):
                break
        c = g.copy()
        patch = g[y0:y0 + bh, x0:x0 + bw]
        c[y1:y1 + bh, x1:x1 + bw] = patch[:, ::-1] if rng.random() < 0.5 else patch
        return c.reshape(-1)

    def colour(k: int) -> np.ndarray:
        with torch.no_grad():
            x = gen(torch.as_tensor(parent[None]))
            gain = torch.as_tensor(np.exp(rng.normal(0.0, 0.4, (k, 3, 1, 1))), dtype=x.dtype)
            bias = torch.as_tensor(rng.normal(0.0, 0.6, (k, 3, 1, 1)), dtype=x.dtype)
            m = x.mean((2, 3), keepdim=True)
            return np.asarray(gen.encode_codes((x - m) * gain + m + bias)).reshape(k, -1).astype(np.int64)

    y0 = float(objective(parent[None])[0]) * T
    n0 = float(np.rint(objective.reported(np.array([y0 / T]))[0] * T))
    print(f"final_spiking[{args.unit}], seed {args.seed}: elite's best {y0:.3f} (spikes + tie) after "
          f"{res.n_queries} queries ({time.perf_counter() - t0:.0f} s)")
    kids = {"point": np.stack([point() for _ in range(args.n)]), "copy": np.stack([copy() for _ in range(args.n)]),
            "colour": colour(args.n)}
    for kind, C in kids.items():
        y = objective(C) * T
        print(f"  {kind:6s}: {int((y > y0).sum()):3d}/{args.n} beat the parent, {int((y >= n0 + 1).sum())} gain a "
              f"spike; best child {y.max():.3f}")
        if kind == "point":
            d = drive(objective, np.concatenate([parent[None], C]), args.unit)
            n = np.rint(objective.reported(y / T) * T)
            same = n == n0
            rho = spearmanr((y - n)[same], d[1:][same]).statistic if same.sum() > 2 else float("nan")
            print(f"          drive (mean input current, threshold {float(objective.target.thr):.2f}): parent "
                  f"{d[0]:.3f}, {int((d[1:] > d[0]).sum())}/{args.n} children higher (max {d[1:].max():.3f}); "
                  f"tie term vs drive among the {int(same.sum())} children with the parent's {int(n0)} spikes: "
                  f"Spearman {rho:.2f}")
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
