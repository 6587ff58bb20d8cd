"""How nevergrad should see a codebook space: bounded integer array vs unordered Choice.

Codebook indices have no order. nevergrad's ``Choice`` describes that exactly but
is slow for some optimizers; a bounded integer ``Array`` is fast but hands an
arbitrary order to the optimizers that use one. This script measures both,
side by side, on the separable codebook problem (known maximum) and on the
paper-sized space (overhead only)::

    python experiments/nevergrad_encoding.py                 # quality + overhead table
    python experiments/nevergrad_encoding.py --seeds 5 --budget 2000

Quality: median over seeds of the best value at ``--budget`` queries on
``separable(d=16, n=32)`` (random search and the known maximum for scale).
Overhead: ms per query of ask/tell (loop wall time minus objective time) at
d = 64, n = 512 over ``--overhead-queries`` queries (one seed).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mango import problems
from mango.loop import maximize

METHODS = ("discrete-one-plus-one", "ngopt", "portfolio", "cma")


def _run(obj, name: str, params: dict, budget: int, seed: int) -> tuple[float, float]:
    """Best value and optimizer overhead (ms/query) of one run."""
    t_obj = [0.0]
    fn = obj.fn

    def timed(I):
        t = time.perf_counter()
        out = fn(I)
        t_obj[0] += time.perf_counter() - t
        return out

    obj.fn = timed
    t = time.perf_counter()
    res = maximize(obj, name, budget=budget, seed=seed, batch_size=50, params=params)
    wall = time.perf_counter() - t
    obj.fn = fn
    return float(res.best_value), 1e3 * (wall - t_obj[0]) / budget


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--overhead-queries", type=int, default=200)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    a = ap.parse_args(argv)

    known = [problems.separable(d=16, n=32, seed=s).known_max for s in range(a.seeds)]
    rand = [_run(problems.separable(d=16, n=32, seed=s), "random", {}, a.budget, s)[0] for s in range(a.seeds)]
    print(f"separable d=16 n=32, {a.budget} queries, median of {a.seeds} seeds; "
          f"known max {np.median(known):.2f}, random search {np.median(rand):.2f}")
    print(f"{'optimizer':24s} {'integer':>9s} {'choice':>9s}   overhead ms/query at d=64 n=512: integer / choice")
    for m in a.methods:
        row = {}
        for enc in ("integer", "choice"):
            best = [_run(problems.separable(d=16, n=32, seed=s), m, {"encoding": enc}, a.budget, s)[0]
                    for s in range(a.seeds)]
            ovh = _run(problems.separable(d=64, n=512, seed=0), m, {"encoding": enc}, a.overhead_queries, 0)[1]
            row[enc] = (float(np.median(best)), ovh)
        print(f"{m:24s} {row['integer'][0]:9.2f} {row['choice'][0]:9.2f}   "
              f"{row['integer'][1]:8.2f} / {row['choice'][1]:8.2f}", flush=True)


if __name__ == "__main__":
    main()
