"""Overhead of the live run artifacts (mango.live) on a run that improves at every batch.

A sngan-digits -> cnn-digits objective is wrapped so that every batch beats the previous one
(a growing offset is added), the worst case for the writer. The same run is timed without the
writer, with the default throttle (2 % of wall time) and unthrottled (every improvement written).

    python experiments/bench_live_artifacts.py [--budget 2000] [--batch-size 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mango.config import RunConfig, build_objective
from mango.live import LiveArtifacts
from mango.loop import maximize


class Improving:
    """Proxy of an objective whose values grow by 1 per batch (an improvement at every batch)."""

    def __init__(self, obj):
        self._obj = obj
        self._k = 0

    def __call__(self, I):
        self._k += 1
        return np.asarray(self._obj(I), dtype=np.float64) + 1000.0 * self._k

    def __getattr__(self, name):
        return getattr(self._obj, name)


def one(cfg: RunConfig, share: float | None, folder: Path) -> tuple[float, int, float]:
    obj = Improving(build_objective(cfg))
    writer = LiveArtifacts(folder, cfg.to_dict(), max_share=share) if share is not None else None
    t0 = time.perf_counter()
    maximize(obj, "random", cfg.budget, 0, batch_size=cfg.batch_size, callbacks=[writer] if writer else [])
    wall = time.perf_counter() - t0
    return wall, (writer.writes if writer else 0), (writer.write_seconds if writer else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    cfg = RunConfig.from_dict({"generator": {"name": "sngan-digits"}, "target": {"name": "cnn-digits", "unit": 3},
                               "budget": a.budget, "batch_size": a.batch_size, "optimizer": {"name": "random"}})
    batches = -(-a.budget // a.batch_size)
    print(f"budget {a.budget}, batch {a.batch_size}: {batches} batches, an improvement at each")
    modes = (("no writer", None), ("throttled 2 %", 0.02), ("every improvement", 1.0))
    res: dict[str, list[tuple[float, int, float]]] = {m: [] for m, _ in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):  # interleaved, so a busy machine slows every mode alike
            for label, share in modes:
                res[label].append(one(cfg, share, Path(tmp) / f"{label}-{r}"))
    base = float(np.median([r[0] for r in res["no writer"]]))
    for label, _ in modes:
        runs = res[label]
        wall = float(np.median([r[0] for r in runs]))
        writes = int(np.median([r[1] for r in runs]))
        wsec = float(np.median([r[2] for r in runs]))
        print(f"{label:>18}: wall {wall:6.2f} s (median of {a.repeats}), {writes:4d} writes, "
              f"{wsec:5.2f} s writing = {100 * wsec / wall:4.1f} % of the run; "
              f"wall vs no writer {100 * (wall / base - 1):+5.1f} %")

if __name__ == "__main__":
    main()
