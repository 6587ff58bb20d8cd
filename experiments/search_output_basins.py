"""Diagnostic: are elite's and the gradient AM's best codes for an output neuron in one basin?

On a tuning output neuron of the paper SNN (default ``final_spiking[2]``; never a benchmark or
held-out unit), runs the default optimizer and the gradient AM for 1,000 queries each (seed 0),
then scores codes on the way from elite's best code to the gradient's:

* straight paths: the positions where the two codes differ are switched to the gradient's code one at
  a time, in three random orders (every 4th step printed);
* a greedy walk: from elite's code, repeatedly take the single switch toward the gradient's code that
  scores best (20 steps), with how many of the candidate switches beat the current code.

    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_basins.py --unit 2   # ~4 min on 2 cores

Scores are the graded readout (rate plus the sub-spike tie term).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mango.config import build_objective, validate_config
from mango.loop import maximize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", type=int, default=2, help="output neuron (final_spiking) of the paper SNN")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    def objective():
        return build_objective(validate_config({
            "generator": {"name": "vqvae-cifar10"},
            "target": {"name": "snn-cifar10", "layer": "final_spiking", "unit": args.unit, "T": 32},
            "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 10}))

    t0 = time.perf_counter()
    e = maximize(objective(), "elite", budget=1000, seed=args.seed, batch_size=50)
    g = maximize(objective(), "gradient", budget=1000, seed=args.seed)
    E, G = np.asarray(e.best_code), np.asarray(g.best_code)
    diff = np.nonzero(E != G)[0]
    print(f"final_spiking[{args.unit}], seed {args.seed}: elite {e.best_value:.3f} ({len(np.unique(E))} distinct codes), "
          f"gradient AM {g.best_value:.3f} ({len(np.unique(G))} distinct codes); they differ at {len(diff)} of "
          f"{len(E)} positions ({time.perf_counter() - t0:.0f} s)")
    obj = objective()
    rng = np.random.default_rng(0)
    for trial in range(3):
        path = [E.copy()]
        for p in rng.permutation(diff):
            c = path[-1].copy()
            c[p] = G[p]
            path.append(c)
        v = obj(np.stack(path))
        print(f"straight path {trial} (every 4th of {len(path)}): " + " ".join(f"{x:.3f}" for x in v[::4])
              + f" ... {v[-1]:.3f}; lowest {v.min():.3f}")
    cur, cur_v, left = E.copy(), float(obj(E[None])[0]), list(diff)
    print(f"greedy walk from elite's code ({cur_v:.3f}): step, position, value, switches that beat the current code")
    for step in range(min(20, len(left))):
        cands = []
        for p in left:
            c = cur.copy()
            c[p] = G[p]
            cands.append(c)
        v = obj(np.stack(cands))
        i = int(np.argmax(v))
        print(f"  {step + 1:2d}  {left[i]:2d}  {v[i]:.3f}  {int((v > cur_v).sum())}/{len(left)}")
        cur, cur_v = cands[i], float(v[i])
        left.pop(i)
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
