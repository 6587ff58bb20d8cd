"""``mango demo``: maximize units of the embedded default models and compare with random search.

Runs the default optimizer (:data:`mango.optimizers.DEFAULT_OPTIMIZER`) and random
search at equal budget on (a) a class neuron of the default spiking network's
read-out and (b) a hidden spiking unit, both through the default digits VQ-VAE,
and writes one run folder per (unit, optimizer) plus ``summary.json``. The table
shows the firing rate (what the user maximizes; the search scores it with the
graded readout) and the query at which it was first reached. When the default
models are not installed it falls back to an analytic problem with a known
maximum.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .clitools import Progress, check_out_dir, slug
from .config import positive_int, run_config
from .errors import check_seed
from .optimizers import DEFAULT_OPTIMIZER

__all__ = ["run_demo", "DEMO_UNITS"]

log = logging.getLogger(__name__)

#: (label, generator config, target config) of the demo
DEMO_UNITS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("snn class 1 (spiking_out[1])", {"name": "vqvae-digits"},
     {"name": "snn-digits", "layer": "spiking_out", "unit": 1}),
    ("snn hidden channel (spiking1[20])", {"name": "vqvae-digits"},
     {"name": "snn-digits", "layer": "spiking1", "unit": 20}),
]


def _have_models() -> bool:
    return "vqvae-digits" in registry.names("generator") and "snn-digits" in registry.names("target")


def run_demo(out: Path, budget: int = 1000, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Run the demo into ``out``; returns (and writes) the summary table.

    Raises:
        ConfigError: ``budget`` not an integer >= 1 or ``seed`` outside ``[0, 2**32 - 1]``, before any
            folder is made or any model is loaded.
    """
    budget = positive_int(budget, "budget")
    seed = check_seed(seed)
    out = check_out_dir(out)   # a file, or a path that cannot be made: one line naming it
    if _have_models():
        cases = [(label, {"generator": g, "target": t}) for label, g, t in DEMO_UNITS]
    else:
        log.warning("default models not installed: running the demo on an analytic problem")
        cases = [("separable", {"problem": {"name": "separable", "d": 16, "n": 32}})]
    summary: dict[str, Any] = {}
    for label, base in cases:
        for opt in (DEFAULT_OPTIMIZER, "random"):
            cfg = {**base, "optimizer": {"name": opt}, "budget": budget, "seed": seed, "batch_size": 50}
            bar = None if quiet else Progress(budget, desc=f"{label} {opt}")
            try:
                res = run_config(cfg, out / slug(label) / opt, callbacks=[bar] if bar else [])
            finally:
                if bar:
                    bar.close()
            reported = res.values if res.reported is None else res.reported
            best = float(reported.max())
            first = int(np.argmax(reported >= best)) + 1
            summary.setdefault(label, {})[opt] = {"best": best, "reported": res.reported_name,
                                                  "best_score": res.best_value, "queries": res.n_queries,
                                                  "queries_to_best": first, "seconds": round(res.seconds, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    width = max(len(k) for k in summary)
    what = next(iter(next(iter(summary.values())).values()))["reported"]
    print(f"best {what} after {budget} queries (seed {seed}), and the query at which it was first reached")
    w = max(8, len(DEFAULT_OPTIMIZER))
    print(f"{'unit':<{width}}  {DEFAULT_OPTIMIZER:>{w}} {'at query':>8}  {'random':>8} {'at query':>8}")
    for label, row in summary.items():
        p, r = row[DEFAULT_OPTIMIZER], row["random"]
        print(f"{label:<{width}}  {p['best']:>{w}.4f} {p['queries_to_best']:>8d}  "
              f"{r['best']:>8.4f} {r['queries_to_best']:>8d}")
    print(f"run folders and best.png images under {out}")
    return summary
