"""Gradient AM baseline on the paper pipeline: best firing rate and wall time per unit.

Pipeline: ``vqvae-cifar10`` (8 x 8 codes over a 512-code book) -> ``snn-cifar10`` at
T = 32 (graded readout; the rate reported is the plain firing rate recovered from it).

Unit rule (fixed before any result was seen): draw 100 random codes (numpy
``default_rng(0)``, uniform over the codebook), run them through the SNN, and take
the lowest-index unit that never fires on any of them in each of ``spiking1`` (a
channel, mean over its 5 x 5 positions), ``spiking2`` and ``final_spiking``; then
add output unit 3 (the paper's "cat"), whatever it does.

For each unit: ``mango.loop.maximize`` with the optimizer ``gradient`` (its default
recipe, ``batch_size`` 1) at budget 1000, seed 0; reported: the best rate at the end,
the best rate within the first chain (331 queries: 300 Adam steps + 30 hard codes, the
recipe of search-facts.md) and the wall time of each. The SNN runs the pure-torch neuron
kernel (no compile time in the figures) on ``--threads`` CPU threads (default 1). ``--old FILE`` also runs the
previous implementation (``git show <rev>:mango/optimizers/gradient.py > FILE``) with its
defaults on the first ``--old-units`` units.

Usage::

    MANGO_PAPER_WEIGHTS=/work/shared/weights/cifar10 \
        python experiments/bench_gradient_am.py --out experiments/results/gradient_am.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mango import registry
from mango.loop import maximize
from mango.objective import Objective

T = 32
LAYERS = ("spiking1", "spiking2", "final_spiking")


def silent_units(gen, target, n: int = 100, seed: int = 0) -> dict[str, list[int]]:
    """Per layer: the units that fire on none of ``n`` random codes (sorted)."""
    I = gen.space.sample(np.random.default_rng(seed), n)
    with torch.no_grad():
        x = gen(gen.space.decode(I, "cpu"))
        out = {}
        for layer in LAYERS:
            counts = torch.cat([target._fast.run(x[i:i + 25], T, layer)[0] for i in range(0, n, 25)])
            per_unit = counts.flatten(2).sum(2) if counts.ndim > 2 else counts      # [n, units]
            out[layer] = [int(u) for u in torch.nonzero(per_unit.sum(0) == 0).flatten()]
    return out


def run_unit(gen, layer: str, unit: int, budget: int, optimizer, seed: int = 0) -> dict:
    target = registry.create("target", "snn-cifar10", {"layer": layer, "unit": unit, "T": T, "backend": "torch"})
    obj = Objective(gen, target)
    t0 = time.perf_counter()
    res = maximize(obj, optimizer, budget=budget, seed=seed) if not isinstance(optimizer, str) else \
        maximize(obj, optimizer, budget=budget, seed=seed, batch_size=1)
    wall = time.perf_counter() - t0
    rates = target.reported(res.values)
    out = {"layer": layer, "unit": unit, "best_rate": float(rates.max()), "best_score": res.best_value,
           "n_queries": res.n_queries, "seconds": wall}
    first = res.query_index <= 331
    if first.any():
        j = int(np.nonzero(first)[0][-1])
        out.update(best_rate_331=float(rates[: j + 1].max()), seconds_331=float(res.times[j]))
    return out


def load_old(path: str, space, budget: int):
    spec = importlib.util.spec_from_file_location("mango.optimizers._gradient_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.GradientAM(space, budget=budget)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--old", default=None, help="file with the previous gradient.py to compare")
    ap.add_argument("--old-units", type=int, default=2)
    ap.add_argument("--only-old", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no OpenMP barriers on a busy machine)")
    ap.add_argument("--units", type=int, default=None, help="run only the first N units of the rule")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = registry.create("generator", "vqvae-cifar10")
    probe = registry.create("target", "snn-cifar10", {"T": T, "backend": "torch"})
    silent = silent_units(gen, probe)
    units = [(layer, silent[layer][0]) for layer in LAYERS if silent[layer]] + [("final_spiking", 3)]
    report = {"T": T, "budget": args.budget, "silent_counts": {k: len(v) for k, v in silent.items()},
              "units": units, "torch_threads": torch.get_num_threads(), "new": [], "old": []}
    print("silent on 100 random codes:", report["silent_counts"], "units:", units, flush=True)
    units = units[: args.units] if args.units else units
    if not args.only_old:
        for layer, unit in units:
            r = run_unit(gen, layer, unit, args.budget, "gradient")
            report["new"].append(r)
            print("new", json.dumps(r), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))
    if args.old:
        for layer, unit in units[: args.old_units]:
            r = run_unit(gen, layer, unit, args.budget, load_old(args.old, gen.space, args.budget))
            report["old"].append(r)
            print("old", json.dumps(r), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
