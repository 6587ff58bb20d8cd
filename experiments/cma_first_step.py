"""CMA-ES's first step on a GAN grid: ``cma`` with ``sigma0`` 0.25 of the range against nevergrad's own.

nevergrad starts CMA-ES on a fully bounded space with a spread of 0.025 of the range (see
``mango/optimizers/evolutionary.py``); this runs ``cma`` with both first steps, and random search
as a reference, on class logits of the embedded digits CNN through the embedded digits GAN
(``sngan-digits``: a latent put on a grid of ordered levels) and prints the median best logit
per unit and the mean over units.

    python experiments/cma_first_step.py                      # 4 units x 3 seeds x 500 queries, ~40 s on 2 cores
    python experiments/cma_first_step.py --budget 200 --seeds 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mango
from mango import registry

ARMS = (("cma, sigma0=0.25", "cma", {"sigma0": 0.25}),
        ("cma, nevergrad's step", "cma", {"sigma0": "nevergrad"}),
        ("random", "random", {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[0, 3, 5, 8], help="class logits of cnn-digits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args()
    model = registry.create("target", "cnn-digits").model
    t0 = time.perf_counter()
    print(f"sngan-digits + cnn-digits, {args.budget} queries, batch {args.batch_size}, seeds {args.seeds}; "
          "median best logit over seeds")
    print("| arm | " + " | ".join(f"logit {u}" for u in args.units) + " | mean |")
    print("| --- |" + " --- |" * (len(args.units) + 1))
    for label, name, params in ARMS:
        med = [float(np.median([mango.maximize(model, f"logits:{u}", generator="sngan-digits", optimizer=name,
                                               optimizer_params=params, budget=args.budget, seed=s,
                                               batch_size=args.batch_size).best_value for s in args.seeds]))
               for u in args.units]
        print(f"| {label} | " + " | ".join(f"{m:.2f}" for m in med) + f" | {np.mean(med):.2f} |")
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
