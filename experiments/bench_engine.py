"""Engine overhead: optimizer + bookkeeping per query, with a trivial objective.

The paper's search space: d = 64 codebook positions with n = 512 codes
(QTT view: 576 binary variables), budget 10,000 queries, a trivial objective
(``y = I[:, 0]``, cache off), so everything measured is the engine's own cost:
the optimizer's ask/tell, index validation, history and (with ``--journal``)
the fsynced journal.

    python experiments/bench_engine.py                      # all optimizers, budget 10,000
    python experiments/bench_engine.py --only protes ttopt --journal

Prints queries/second and overhead ms/query (loop wall time minus time inside
the objective, over queries), the median of ``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from mango import problems
from mango.loop import maximize

CASES = [
    ("protes", {}, None),
    ("protes", {"qtt": True}, None),
    ("ttopt", {}, 100),
    ("random", {}, 100),
    ("ga", {}, 100),
    ("ngopt", {}, 100),
    ("portfolio", {}, 100),
    ("cma", {}, 100),
    ("diagonal-cma", {}, 100),
    ("two-points-de", {}, 100),
    ("discrete-one-plus-one", {}, 100),
]


def bench(name: str, params: dict, batch: int | None, budget: int, journal: bool) -> tuple[float, float, float]:
    obj = problems.constant(d=64, n=512)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = maximize(obj, name, budget=budget, seed=0, batch_size=batch, params=dict(params),
                       run_dir=os.path.join(tmp, "run") if journal else None)
        wall = time.perf_counter() - t
    overhead = wall - obj.eval_seconds
    return res.n_queries / wall, 1e3 * overhead / res.n_queries, res.optimizer_seconds / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--journal", action="store_true", help="journal every batch to disk (fsync)")
    ap.add_argument("--only", nargs="*", help="optimizer names to run")
    args = ap.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; d=64, n=512, budget {args.budget}, journal={args.journal}, "
          f"median of {args.repeats}")
    print(f"{'optimizer':<28} {'batch':>5} {'queries/s':>10} {'overhead ms/q':>14} {'share in optimizer':>19}")
    for name, params, batch in CASES:
        if args.only and name not in args.only:
            continue
        runs = [bench(name, params, batch, args.budget, args.journal) for _ in range(args.repeats)]
        qps, ms, share = (float(np.median([r[i] for r in runs])) for i in range(3))
        label = name + ("(qtt)" if params.get("qtt") else "")
        print(f"{label:<28} {batch or 50:>5} {qps:>10.0f} {ms:>14.3f} {100 * share:>18.1f}%", flush=True)


if __name__ == "__main__":
    main()
