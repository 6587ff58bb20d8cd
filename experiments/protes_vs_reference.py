"""MANGO's ask/tell PROTES against the reference ``protes`` package, side by side.

Usage (the reference is an optional, separately installed package: it pins
``jax<0.5`` and ``numpy<2.0.2``, so install it without its pins)::

    pip install --no-deps protes==0.3.12
    python experiments/protes_vs_reference.py            # the comparison table
    python experiments/protes_vs_reference.py --sweep    # the defaults sweep

For each problem with a known maximum and each seed, at equal budget:

* ``ref``          -- ``protes.protes`` with its own defaults (k=100, k_top=10, k_gd=1);
* ``mango-paper``  -- MANGO's PROTES with the reference's hyperparameters
  (k=100, k_top=10, k_gd=1, lr=0.05, elite=0, categorical): the same algorithm,
  our implementation;
* ``mango-cat``    -- MANGO's earlier defaults, categorical (k=50, k_top=5, k_gd=5,
  lr=0.05, elite=20, qtt=false);
* ``mango``        -- MANGO's PROTES with its defaults (k=50, k_top=5, elite=20;
  QTT view with k_gd=10, lr=0.1 when n = 2**q >= 64, else the ``mango-cat`` setting);
* ``mango-cold``   -- the same run with MANGO's compiled-function cache cleared first,
  so it pays for jit compilation at every run as the reference does.

It prints the median (over seeds) best value, its fraction of the known maximum,
and the optimizer's overhead per query (wall time minus time in the objective).
The reference compiles its jitted functions inside every ``protes()`` call, so its
overhead includes that compilation; MANGO compiles once per process and shape
(``mango``, ``mango-paper``, ``mango-cat``: the first seed of a problem pays, the
median seed does not) -- ``mango-cold`` is the like-for-like figure.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mango import problems
from mango.loop import maximize
from mango.optimizers.protes import _FNS

PROBLEMS = {
    "tt-random d=8 n=8 r=4": (lambda s: problems.tt_random(d=8, n=8, rank=4, seed=100 + s), 5000),
    "tt-random d=16 n=16 r=3": (lambda s: problems.tt_random(d=16, n=16, rank=3, seed=200 + s), 5000),
    "separable d=64 n=128": (lambda s: problems.separable(d=64, n=128, seed=s), 10000),
    "separable d=16 n=32": (lambda s: problems.separable(d=16, n=32, seed=s), 2000),
}


class Timed:
    """Wrap an index function, accumulating the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, I):
        t = time.perf_counter()
        out = np.asarray(self.fn(np.asarray(I)), dtype=np.float64)
        self.seconds += time.perf_counter() - t
        return out


def run_reference(obj, budget: int, seed: int) -> tuple[float, float]:
    import protes

    f = Timed(obj.fn)
    t = time.perf_counter()
    _, y = protes.protes(f, d=obj.space.d, n=obj.space.n, m=budget, k=100, k_top=10, seed=seed, is_max=True)
    wall = time.perf_counter() - t
    return float(y), (wall - f.seconds) / budget


def run_mango(obj, budget: int, seed: int, **params) -> tuple[float, float]:
    batch = params.pop("batch_size", None)
    f = Timed(obj.fn)
    obj.fn = f
    t = time.perf_counter()
    res = maximize(obj, "protes", budget=budget, seed=seed, batch_size=batch, params=params)
    wall = time.perf_counter() - t
    return res.best_value, (wall - f.seconds) / budget


def compare(seeds: int) -> None:
    import protes  # noqa: F401  (fail early with a clear message if missing)

    # warm-up: first-call cost (imports + jit) of each, on a tiny problem
    w = problems.separable(d=4, n=4)
    t = time.perf_counter()
    run_reference(w, 200, 0)
    ref_first = time.perf_counter() - t
    t = time.perf_counter()
    run_mango(problems.separable(d=4, n=4), 200, 0)
    ours_first = time.perf_counter() - t
    print(f"first call on a tiny problem (imports + jit): reference {ref_first:.2f} s, mango {ours_first:.2f} s\n")
    header = f"{'problem':<26} {'budget':>6} {'method':<12} {'median best':>12} {'frac of max':>11} {'overhead ms/q':>13}"
    print(header)
    print("-" * len(header))
    for name, (make, budget) in PROBLEMS.items():
        rows = {"ref": [], "mango-paper": [], "mango-cat": [], "mango": [], "mango-cold": []}
        ovh = {k: [] for k in rows}
        known = []
        for s in range(seeds):
            obj = make(s)
            known.append(obj.known_max)
            y, o = run_reference(obj, budget, s)
            rows["ref"].append(y), ovh["ref"].append(o)
            y, o = run_mango(make(s), budget, s, batch_size=100, k_top=10, k_gd=1, lr=0.05, elite=0,
                             qtt=False)
            rows["mango-paper"].append(y), ovh["mango-paper"].append(o)
            y, o = run_mango(make(s), budget, s, k_gd=5, lr=0.05, qtt=False)
            rows["mango-cat"].append(y), ovh["mango-cat"].append(o)
            y, o = run_mango(make(s), budget, s)
            rows["mango"].append(y), ovh["mango"].append(o)
            warm = dict(_FNS)
            _FNS.clear()   # compile again, as the reference does at every call ...
            y, o = run_mango(make(s), budget, s)
            _FNS.clear()
            _FNS.update(warm)   # ... and leave the other methods' cache as it was
            rows["mango-cold"].append(y), ovh["mango-cold"].append(o)
        for method in rows:
            vals = np.array(rows[method])
            frac = np.median(vals / np.array(known))
            print(f"{name:<26} {budget:>6} {method:<12} {np.median(vals):>12.4f} {frac:>11.3f} "
                  f"{1e3 * np.median(ovh[method]):>13.3f}", flush=True)


def sweep(seeds: int) -> None:
    grid = [(100, 10, 1, 0.05, 0), (50, 5, 1, 0.05, 0), (50, 5, 5, 0.05, 0), (50, 5, 5, 0.05, 20),
            (50, 5, 10, 0.05, 20), (50, 5, 20, 0.05, 20), (50, 5, 10, 0.1, 20), (20, 4, 2, 0.1, 0)]
    probs = [("separable 16x32", lambda s: problems.separable(16, 32, s), 2000),
             ("separable 64x128", lambda s: problems.separable(64, 128, s), 5000),
             ("tt-random 8x8 r4", lambda s: problems.tt_random(8, 8, 4, 100 + s), 2000)]
    print("categorical view; (k, k_top, k_gd, lr, elite) -> median fraction of the known maximum per problem:",
          ", ".join(p[0] for p in probs))
    for k, k_top, k_gd, lr, elite in grid:
        out = []
        for _, make, budget in probs:
            fr = []
            for s in range(seeds):
                obj = make(s)
                y, _ = run_mango(obj, budget, s, batch_size=k, k_top=k_top, k_gd=k_gd, lr=lr, elite=elite,
                                 qtt=False)
                fr.append(y / obj.known_max)
            out.append(float(np.median(fr)))
        print((k, k_top, k_gd, lr, elite), " ".join(f"{v:.3f}" for v in out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sweep", action="store_true", help="run the defaults sweep instead of the comparison")
    args = ap.parse_args()
    sweep(args.seeds) if args.sweep else compare(args.seeds)


if __name__ == "__main__":
    main()
