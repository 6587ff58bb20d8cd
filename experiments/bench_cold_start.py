"""Benchmark: cold start of the paper pipeline (time to the first answered batch in a fresh process).

    MANGO_PAPER_WEIGHTS=/work/shared/weights/cifar10 \
    python experiments/bench_cold_start.py [--backends compile auto] [--repeats 1] [--budget 500]

Each measurement is a fresh Python subprocess that builds the paper pipeline
(``vqvae-cifar10`` generator + ``snn-cifar10`` target, class neuron 3, T=32,
``eval_batch_size`` 50) and runs ``--optimizer`` (default PROTES; batch 50, seed 0) for ``--budget``
queries through :func:`mango.loop.maximize`. It reports, measured inside the
child from its first line (before ``import torch``):

* ``models built s``: imports and loading both models;
* ``first batch s``: until the first batch of queries is answered (the loop's
  first callback), i.e. imports + model loading + the first 50 evaluations;
* ``total s``: until all ``--budget`` queries are answered;
* ``best``: the run's best value (must be identical across backends: the
  compiled and uncompiled neuron kernels give bit-identical spikes).

"cold": the child gets a fresh, empty ``TORCHINDUCTOR_CACHE_DIR`` (a temporary
folder), so nothing compiled by an earlier process is reused; "warm": a second
child with the same cache folder as the cold one before it.

Backends (``snn-cifar10 backend=``): ``compile`` compiles the fused neuron kernel
before the first batch is answered (what ``auto`` did before the cold-start
change); ``auto`` answers with the exact uncompiled kernel while the compiled one
is built in a background thread, and switches when it is ready; ``torch`` never
compiles.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
budget, backend, optimizer = int(sys.argv[1]), sys.argv[2], sys.argv[3]
from mango import registry
from mango.loop import maximize
from mango.objective import Objective
gen = registry.create("generator", "vqvae-cifar10", {})
tgt = registry.create("target", "snn-cifar10", {"T": 32, "unit": 3, "backend": backend})
obj = Objective(gen, tgt, batch_size=50)
t_built = time.perf_counter() - t0
first = []
def cb(ev):
    if not first:
        first.append(time.perf_counter() - t0)
res = maximize(obj, optimizer, budget, seed=0, batch_size=50, callbacks=[cb])
total = time.perf_counter() - t0
fast = getattr(tgt, "_fast", None)
print(json.dumps({"built": t_built, "first": first[0], "total": total, "best": res.best_value,
                  "n": res.n_queries, "kernel": getattr(fast, "kernel_in_use", lambda: "?")()}))
"""


def run_child(budget: int, backend: str, cache_dir: str, timeout: float, optimizer: str = "protes") -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(budget), backend, optimizer], env=env, capture_output=True,
                       text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"child failed ({backend}):\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+", default=["compile", "auto"])
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--optimizer", default="protes", help="registered optimizer (default protes; layout-elite is the default of runs)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-cache measurement")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    import torch

    print(f"# python experiments/bench_cold_start.py {' '.join(sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPU cores, torch {torch.__version__}, load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"| backend | cache | repeat | models built s | first batch s | total s ({args.budget} q) | process wall s "
          "| best | kernel at end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in range(args.repeats):
        for backend in args.backends:
            with tempfile.TemporaryDirectory(prefix="mango-inductor-") as cache:
                runs = [("cold", run_child(args.budget, backend, cache, args.timeout, args.optimizer))]
                if not args.no_warm:
                    runs.append(("warm", run_child(args.budget, backend, cache, args.timeout, args.optimizer)))
            for kind, o in runs:
                print(f"| {backend} | {kind} | {r} | {o['built']:.1f} | {o['first']:.1f} | {o['total']:.1f} | {o['wall']:.1f} | "
                      f"{o['best']:.6g} | {o['kernel']} |", flush=True)
    print(f"# load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
