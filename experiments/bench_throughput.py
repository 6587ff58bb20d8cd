"""Throughput: images/s of generator + target alone vs. inside the optimisation loop.

For each pipeline (generator -> target) it measures

* ``raw``: images/s of the objective evaluating fresh random codes in batches
  of ``--batch`` (decode + generator + target, nothing else);
* per optimizer: queries/s and evaluated images/s (cache hits are queries,
  not images) of :func:`mango.loop.maximize` on the same objective with the
  same batch size, the images/s as a share of the raw rate, and the engine overhead = share of the loop's wall
  time spent outside evaluation (optimizer ask/tell, validation, bookkeeping).
  Gradient AM evaluates inside its ask (forward + backward per step), so its
  "overhead" is mostly its own evaluations: read it as the cost of gradients.

    python experiments/bench_throughput.py                       # CPU, digits + paper pipelines
    python experiments/bench_throughput.py --device cuda --batch 1024 --budget 20000
    python experiments/bench_throughput.py --only random protes --pipelines digits --out bench.json

The device (CPU model / GPU name) and thread count are printed with the table.
The paper pipeline needs its weights (MANGO_PAPER_WEIGHTS or ../shared/weights/cifar10)
and is skipped with a note when they are missing.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import torch

from mango.config import build_objective, validate_config
from mango.errors import MangoError
from mango.loop import maximize

PIPELINES: dict[str, dict[str, Any]] = {
    "digits": {"generator": {"name": "vqvae-digits"},
               "target": {"name": "snn-digits", "layer": "spiking_out", "unit": 3, "T": 16}},
    "paper-T32": {"generator": {"name": "vqvae-cifar10"},
                  "target": {"name": "snn-cifar10", "layer": "final_spiking", "unit": 3, "T": 32}},
}
OPTIMIZERS = ["random", "protes", "ttopt", "portfolio", "ngopt", "cma", "discrete-one-plus-one", "gradient"]


def device_name(device: str) -> str:
    """Human-readable name of the device the benchmark runs on."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, torch threads {torch.get_num_threads()}"


def _objective(pipe: dict[str, Any], device: str, batch: int):
    cfg = validate_config({"budget": 1, "optimizer": "random", "device": device, "eval_batch_size": batch, **pipe})
    return build_objective(cfg)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_rate(pipe: dict[str, Any], device: str, batch: int, n: int) -> float:
    """Images/s of the objective alone on fresh random codes (after three warm-up batches)."""
    obj = _objective(pipe, device, batch)
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm-up (compilation, allocator, caches)
        obj(obj.space.sample(rng, batch))
    _sync(device)
    t = time.perf_counter()
    done = 0
    while done < n:
        obj(obj.space.sample(rng, batch))
        done += batch
    _sync(device)
    return done / (time.perf_counter() - t)


def loop_rate(pipe: dict[str, Any], device: str, batch: int, n: int, optimizer: str) -> tuple[float, float, float]:
    """``(queries/s, evaluated images/s, overhead share)`` of one maximize() run with ``optimizer``.

    Queries answered from the objective's cache (repeated codes) count as queries but not as
    evaluated images, so queries/s can exceed the pipeline's own rate.
    """
    obj = _objective(pipe, device, batch)
    obj(obj.space.sample(np.random.default_rng(1), batch))  # same warm-up as raw
    bs = max(1, batch // 10) if optimizer == "gradient" else batch
    maximize(obj, optimizer, budget=2 * bs, seed=12345, batch_size=bs)  # warm-up: JIT (jax); another seed, so no cache hits
    e0, n0 = obj.eval_seconds, obj.n_evaluated
    t = time.perf_counter()
    res = maximize(obj, optimizer, budget=n, seed=0, batch_size=bs)
    _sync(device)
    wall = time.perf_counter() - t
    evals = obj.eval_seconds - e0
    evaluated = (obj.n_evaluated - n0) + res.n_external  # gradient AM's own forward passes count too
    return res.n_queries / wall, evaluated / wall, max(0.0, (wall - evals) / wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default 100 on CPU, 1024 on GPU)")
    ap.add_argument("--budget", type=int, default=None, help="queries per measurement (default 10 batches)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument("--only", nargs="*", help="optimizers to run (default: all)")
    ap.add_argument("--out", help="also write the results as JSON")
    args = ap.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (1024 if device.startswith("cuda") else 100)
    n = args.budget or 10 * batch
    opts = args.only or OPTIMIZERS
    print(f"device: {device_name(device)}; batch {batch}; {n} queries per measurement")
    results: list[dict[str, Any]] = []
    for pname in args.pipelines:
        pipe = PIPELINES[pname]
        try:
            raw = raw_rate(pipe, device, batch, n)
        except MangoError as exc:
            print(f"\n{pname}: skipped ({exc})")
            continue
        print(f"\n{pname}: generator + target alone {raw:,.1f} images/s")
        print(f"  {'optimizer':<24} {'queries/s':>10} {'images/s':>10} {'vs alone':>9} {'engine overhead':>16}")
        results.append({"pipeline": pname, "optimizer": None, "images_per_s": raw})
        for opt in opts:
            try:
                qrate, irate, over = loop_rate(pipe, device, batch, n, opt)
            except MangoError as exc:
                print(f"  {opt:<24} skipped: {exc}")
                continue
            print(f"  {opt:<24} {qrate:>10,.1f} {irate:>10,.1f} {100 * irate / raw:>8.1f}% {100 * over:>15.1f}%")
            results.append({"pipeline": pname, "optimizer": opt, "queries_per_s": qrate, "images_per_s": irate,
                            "overhead": over})
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": device_name(device), "batch": batch, "queries": n, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
