"""How long the live view needs to read a large journal, and to follow one more batch.

Writes a synthetic run folder (``--batches`` x ``--batch`` queries, codes of ``--d`` indices) into a
temporary folder, then times :meth:`mango.watch.reader.FolderWatcher.state`: the first call (reads
and parses the whole journal), a call with nothing new (cached), and a call after one appended
batch (incremental read)::

    python experiments/bench_watch.py --batches 2000 --batch 50 --d 16
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mango.watch.reader import FolderWatcher


def _write(folder: Path, batches: int, k: int, d: int, rng: np.random.Generator) -> None:
    (folder / "run.json").write_text(json.dumps({"budget": batches * k * 2, "optimizer": {"name": "protes"},
                                                 "generator": {"name": "vqvae-digits"}, "target": {"name": "x"}}))
    with open(folder / "journal.jsonl", "w") as fh:
        for b in range(batches):
            fh.write(_line(b, k, d, rng))


def _line(b: int, k: int, d: int, rng: np.random.Generator) -> str:
    return json.dumps({"batch": b, "I": rng.integers(0, 32, (k, d)).tolist(), "y": rng.random(k).tolist(),
                       "t": 0.1 * (b + 1), "time": time.time(), "external": 0}) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write(folder, args.batches, args.batch, args.d, rng)
        size = (folder / "journal.jsonl").stat().st_size
        w = FolderWatcher(folder)
        t0 = time.perf_counter()
        s = w.state()
        first = time.perf_counter() - t0
        same, more = [], []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            w.state()
            same.append(time.perf_counter() - t0)
            with open(folder / "journal.jsonl", "a") as fh:
                fh.write(_line(args.batches + i, args.batch, args.d, rng))
            t0 = time.perf_counter()
            s2 = w.state()
            more.append(time.perf_counter() - t0)
        assert s2["n_queries"] == s["n_queries"] + args.repeat * args.batch
        print(f"journal: {args.batches} batches x {args.batch} queries (d={args.d}), {size / 1e6:.1f} MB")
        print(f"first state (whole journal): {first * 1e3:.0f} ms")
        print(f"state, nothing new (median of {args.repeat}): {np.median(same) * 1e3:.1f} ms")
        print(f"state after one more batch (median of {args.repeat}): {np.median(more) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
