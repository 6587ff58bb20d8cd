"""Benchmark: noise-aware closed loop against a simulated Poisson neuron.

Neuron: unit ``--unit`` of ``--target`` (default cnn-digits class-0 logit) behind
:class:`mango.rig.model.PoissonNeurons` (rate = peak_rate * min-max-normalised
activation, Poisson counts over ``presentation_time``), images from ``--generator``
(default vqvae-digits, 16 codes x 32 values). Each method gets ``--budget``
presentations (candidates x repeats + re-tests), ``--seeds`` seeds, through
:func:`mango.rig.closed_loop` (in-process rig by default; ``--transport zmq``
sends every block over a loopback socket to the simulator).

Score: the noiseless mean count of the *recommended* image (best mean over
repeats) divided by the noiseless optimum, the best expected count found by
long noiseless runs (``--optimum-budget`` queries each of protes and ga, plus
every code any benchmark run recommended). Reported: median and IQR per method, and the mean
bias (against the noiseless expected count) of the selection mean (``best_mean``, the presentations
that chose the code) and of the unbiased hold-out estimate (``holdout_mean``, the final hold-out
block alone).

    python experiments/bench_rig.py --seeds 5 --budget 2000 --out runs/bench_rig
"""
from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mango import registry
from mango.loop import maximize
from mango.objective import FunctionObjective
from mango.rig import make_client
from mango.rig.closedloop import closed_loop
from mango.rig.closedloop import stimulus_images
from mango.rig.model import LocalRig, build_neurons
from mango.rig.simulator import RigSimulator, serve_zmq

METHODS = ("elite", "protes", "ga", "cma", "random")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget", type=int, default=2000, help="presentations per run")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--retest-every", type=int, default=3)
    p.add_argument("--holdout-repeats", type=int, default=10,
                   help="presentations of the chosen code in the final hold-out block (the unbiased estimate)")
    p.add_argument("--generator", default="vqvae-digits")
    p.add_argument("--target", default="cnn-digits")
    p.add_argument("--unit", type=int, default=0)
    p.add_argument("--peak-rate", type=float, default=50.0)
    p.add_argument("--presentation-time", type=float, default=0.2)
    p.add_argument("--optimum-budget", type=int, default=20000)
    p.add_argument("--transport", choices=("local", "zmq"), default="local")
    p.add_argument("--params", action="append", default=[], metavar="METHOD:KEY=VALUE[,KEY=VALUE]",
                   help="optimizer parameters for one method (repeatable), e.g. elite:direct_frac=0.25")
    p.add_argument("--out", default="runs/bench_rig")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    gen = registry.create("generator", args.generator)
    neu = build_neurons(args.target, [args.unit], None, args.generator, peak_rate=args.peak_rate,
                        presentation_time=args.presentation_time, seed=0)

    def expected(I: np.ndarray) -> np.ndarray:
        return neu.expected(stimulus_images(gen, np.asarray(I)))[:, 0]

    rand = expected(gen.space.sample(np.random.default_rng(99), 1000))
    params: dict[str, dict] = {}
    for text in args.params:
        name, _, kv = text.partition(":")
        params[name] = {k: json.loads(v) for k, v in (item.split("=", 1) for item in kv.split(",") if item)}
    runs: list[dict] = []
    for method in args.methods.split(","):
        for seed in range(args.seeds):
            neu.rng = np.random.default_rng(1000 + seed)  # same noise stream per seed for every method
            t0 = time.perf_counter()
            if args.transport == "zmq":
                sim = RigSimulator(neu, seed=seed)
                stop, ready = threading.Event(), threading.Event()
                addr = f"tcp://127.0.0.1:{56000 + seed}"
                th = threading.Thread(target=serve_zmq, args=(sim, addr), kwargs={"stop": stop, "ready": ready})
                th.start()
                ready.wait()
                rig = make_client("zmq", address=addr, timeout=30)
            else:
                rig = LocalRig(neu, seed=seed)
            try:
                res = closed_loop(rig, gen, method, args.budget, seed, batch_size=args.batch_size,
                                  params=params.get(method),
                                  repeats=args.repeats, retest_every=args.retest_every,
                                  holdout_repeats=args.holdout_repeats)
            finally:
                rig.close()
                if args.transport == "zmq":
                    stop.set()
                    th.join()
            true = float(expected(res.best_code[None])[0])
            runs.append({"method": method, "seed": seed, "best_code": res.best_code.tolist(),
                         "selection_mean": res.best_mean, "n": res.best_n, "holdout_mean": res.holdout_mean,
                         "holdout_sem": res.holdout_sem, "holdout_n": res.holdout_n, "expected": true,
                         "presentations": res.presentations, "seconds": time.perf_counter() - t0})
            print(f"{method:7s} seed {seed}: selection mean {res.best_mean:6.2f} (n={res.best_n:2d}) "
                  f"hold-out {res.holdout_mean:6.2f} +- {res.holdout_sem:4.2f} (n={res.holdout_n}) "
                  f"expected {true:6.2f}  [{time.perf_counter() - t0:.1f} s]", flush=True)

    # noiseless optimum: long noiseless runs + everything the noisy runs recommended
    fobj = lambda: FunctionObjective(expected, gen.space, name="expected count")  # noqa: E731
    cands = [max(r["expected"] for r in runs)]
    for opt in ("protes", "ga"):
        r = maximize(fobj(), opt, args.optimum_budget, seed=0, batch_size=100)
        cands.append(r.best_value)
        print(f"noiseless {opt} ({args.optimum_budget} queries): {r.best_value:.3f}", flush=True)
    optimum = float(max(cands))

    rows = []
    for method in args.methods.split(","):
        f = np.array([r["expected"] / optimum for r in runs if r["method"] == method])
        q1, med, q3 = np.percentile(f, [25, 50, 75])
        sel = np.array([r["selection_mean"] - r["expected"] for r in runs if r["method"] == method])
        hold = np.array([r["holdout_mean"] - r["expected"] for r in runs if r["method"] == method])
        rows.append({"method": method, "median": med, "q1": q1, "q3": q3, "min": f.min(), "max": f.max(),
                     "selection_bias": float(np.mean(sel)), "holdout_bias": float(np.nanmean(hold))})
    rand_frac = float(rand.mean() / optimum)
    lines = [f"Simulated Poisson neuron: {args.target} unit {args.unit}, peak {args.peak_rate} Hz x "
             f"{args.presentation_time} s; generator {args.generator}; {args.budget} presentations "
             f"(k={args.batch_size}, repeats={args.repeats}, re-test every {args.retest_every}); "
             f"{args.seeds} seeds; noiseless optimum {optimum:.3f} spikes/presentation; "
             f"random image mean = {rand_frac:.3f} of it.", "",
             "| method | median fraction of noiseless optimum | IQR | min | max | selection mean - expected "
             "(mean) | hold-out mean - expected (mean) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['median']:.3f} | {r['q1']:.3f} - {r['q3']:.3f} | "
                     f"{r['min']:.3f} | {r['max']:.3f} | {r['selection_bias']:+.2f} | {r['holdout_bias']:+.2f} |")
    table = "\n".join(lines)
    print(table)
    (out / "bench_rig.md").write_text(table + "\n")
    (out / "bench_rig.json").write_text(json.dumps({"args": vars(args), "optimum": optimum,
                                                    "random_fraction": rand_frac, "rows": rows, "runs": runs},
                                                   indent=2, default=float))


if __name__ == "__main__":
    main()
