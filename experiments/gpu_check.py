"""GPU check of the paper pipeline: do CUDA and the CPU give the same values, and how much faster is CUDA?

On the paper pipeline (``vqvae-cifar10`` + ``snn-cifar10``, T = 32; tuning units only, never a
benchmark unit), three measurements in one run, CPU and CUDA side by side on the same machine:

1. **agreement**: ``--codes`` uniformly random codes scored on both devices (the graded readout, the
   search score, and the firing rate recovered from it): how many codes get another spike count, the
   largest difference of the graded score;
2. **throughput**: images/s of the objective (decode + SNN over T steps, the exact fast path) per
   forward-pass width (``eval_batch_size``), median of ``--repeats`` timed passes over fresh codes after
   one warm-up; CPU with all of its threads;
3. **one search** per device and optimizer (``elite``, the default when this was measured and the default's second phase, and the gradient baseline): 1,000
   queries on ``final_spiking[1]``, seed 0: wall time and best firing rate.

    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/gpu_check.py --out gpu_check.json

Needs a CUDA device; writes a JSON with every number and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch

from mango.config import build_objective, validate_config
from mango.loop import maximize


def objective(device: str, layer: str, unit: int, width: int) -> Any:
    return build_objective(validate_config({
        "generator": {"name": "vqvae-cifar10", "device": device},
        "target": {"name": "snn-cifar10", "layer": layer, "unit": unit, "T": 32, "device": device},
        "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": width, "device": device}))


def agreement(n: int) -> list[dict[str, Any]]:
    rows = []
    # tuning units (never a benchmark unit) that fire on some random codes: their spike counts are compared too
    for layer, unit in (("spiking1", 3), ("spiking2", 2), ("final_spiking", 5)):
        cpu, gpu = objective("cpu", layer, unit, 64), objective("cuda", layer, unit, 64)
        codes = cpu.space.sample(np.random.default_rng(7), n)
        a, b = cpu(codes), gpu(codes)
        ra, rb = cpu.reported(a), gpu.reported(b)
        rows.append({"unit": f"{layer}[{unit}]", "codes": n, "codes_with_another_rate": int((ra != rb).sum()),
                     "max_rate_diff": float(np.abs(ra - rb).max()), "max_score_diff": float(np.abs(a - b).max()),
                     "codes_that_fire": int((ra > 0).sum())})
    return rows


def throughput(device: str, widths: list[int], repeats: int, per_width: int) -> list[dict[str, Any]]:
    rows = []
    for w in widths:
        obj = objective(device, "final_spiking", 1, w)
        n = max(w, per_width)
        rng = np.random.default_rng(w)
        obj(obj.space.sample(rng, w))                         # warm-up (kernels, caches)
        times = []
        for _ in range(repeats):
            codes = obj.space.sample(rng, n)
            t0 = time.perf_counter()
            obj(codes)                                        # returns numpy: the device work is finished
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({"device": device, "eval_batch_size": w, "images": n, "median_s": med, "images_per_s": n / med})
    return rows


def search(device: str, method: str, budget: int) -> dict[str, Any]:
    obj = objective(device, "final_spiking", 1, 64)
    t0 = time.perf_counter()
    res = maximize(obj, method, budget=budget, seed=0, batch_size=None if method == "gradient" else 50)
    wall = time.perf_counter() - t0
    return {"device": device, "method": method, "budget": budget, "wall_s": wall,
            "best_rate": float(res.best_reported if res.best_reported is not None else res.best_value),
            "optimizer_s": float(res.optimizer_seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codes", type=int, default=1024)
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--cpu-widths", type=int, nargs="*", default=[10, 64])
    ap.add_argument("--methods", nargs="*", default=["elite", "gradient"], help="searches (none: skip them)")
    ap.add_argument("--search-devices", nargs="+", default=["cuda", "cpu"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device")
    t_all = time.perf_counter()
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu": platform.processor(),
            "cpu_threads": torch.get_num_threads(), "cudnn_tf32_outside_mango": torch.backends.cudnn.allow_tf32}
    out: dict[str, Any] = {"info": info, "agreement": agreement(args.codes)}
    out["throughput"] = (throughput("cpu", args.cpu_widths, args.repeats, 256)
                         + throughput("cuda", args.widths, args.repeats, 4096))
    out["search"] = [search(d, m, args.budget) for m in args.methods for d in args.search_devices]
    out["wall_s"] = time.perf_counter() - t_all
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)
    print(json.dumps(info))
    print("agreement (CPU vs CUDA, graded readout):")
    for r in out["agreement"]:
        print(f"  {r['unit']:18s} {r['codes_with_another_rate']:4d}/{r['codes']} codes with another rate "
              f"(max {r['max_rate_diff']:.4f}); max score diff {r['max_score_diff']:.2e}; "
              f"{r['codes_that_fire']} codes fire")
    print("throughput (images/s, median of timed passes):")
    for r in out["throughput"]:
        print(f"  {r['device']:4s} width {r['eval_batch_size']:5d}: {r['images_per_s']:9.1f} img/s "
              f"({r['images']} images in {r['median_s']:.3f} s)")
    print("search on final_spiking[1], seed 0:")
    for r in out["search"]:
        print(f"  {r['method']:8s} {r['device']:4s}: best rate {r['best_rate']:.4f} in {r['wall_s']:.1f} s "
              f"(optimizer {r['optimizer_s']:.1f} s)")
    print(f"wall {out['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
