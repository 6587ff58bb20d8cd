"""Search the VQ-VAE's continuous embedding space instead of its codes: a diagnostic for silent channels.

The paper VQ-VAE's decoder takes any 64-d vector at each of its 8 x 8 positions, not only codebook
rows, so its 4,096 latent numbers can be searched as one continuous vector (as XDream and Wang &
Ponce search a GAN latent) and snapped to the nearest codebook entries at the end. This script runs
two gradient-free searches there on ``spiking1`` channels of the paper SNN, scored by the target's
graded readout (the default), and prints the best continuous score, the score of its snapped code
and its plain firing rate:

* ``greedy``: a (1 + 50) evolution strategy, Gaussian children of the best latent, the step size
  adapted by the success rule (grows when more than 1/5 of a batch beats the best);
* ``nes``: an antithetic natural-evolution strategy (25 pairs per step, rank-shaped weights) that
  moves the mean along the estimated gradient of the score.

Both start from the best of 50 uniform codes (one codebook entry at every position: the design
elite starts from), or with ``--elite-start N`` from the best code of ``N`` queries of ``elite``.
Units: ``spiking1`` channels by default (``--layer`` for another layer), outside the search-quality
benchmark (index not a multiple of the layer's benchmark stride). It is a
diagnostic, not a registered optimizer: ``experiments/results/search_quality_tuning.md`` compares
it with ``elite``.

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_embedding_es.py \\
        --method greedy --units 14 17 55 --seeds 1          # about 45 s a run on one core
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

STRIDE = {"spiking1": 4, "spiking2": 5, "final_spiking": 3}   # the benchmark's strides (search_quality.toml)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["greedy", "nes"], default="greedy")
    ap.add_argument("--snap", action="store_true",
                    help="evaluate each child's snapped code (nearest codebook entry per position) instead of "
                         "its continuous latent: the search state stays continuous, every image is a code's")
    ap.add_argument("--layer", choices=sorted(STRIDE), default="spiking1")
    ap.add_argument("--units", type=int, nargs="+", default=[14, 17, 55], help="units of --layer")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--budget", type=int, default=1000, help="evaluations per run")
    ap.add_argument("--sigma", type=float, default=0.3, help="initial step, in units of the codebook's std")
    ap.add_argument("--elite-start", type=int, default=0,
                    help="start from the best code of this many queries of elite (the default optimizer then, the default's second phase now; they "
                         "count in the budget) instead of the best of 50 uniform codes")
    args = ap.parse_args(argv)
    bench = [u for u in args.units if u % STRIDE[args.layer] == 0]
    if bench:
        ap.error(f"units {bench} are benchmark candidates (multiples of {STRIDE[args.layer]}); pick others")

    torch.set_num_threads(1)
    from mango.config import build_objective, validate_config

    def objective(unit: int):
        cfg = validate_config({"generator": {"name": "vqvae-cifar10"},
                               "target": {"name": "snn-cifar10", "layer": args.layer, "unit": unit, "T": 32},
                               "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 50})
        return build_objective(cfg)

    for unit in args.units:
        obj = objective(unit)
        gen = obj.generator
        book = torch.as_tensor(gen.code_vectors())                 # [512, 64]
        h, w = gen.latent_shape

        def snap(E: torch.Tensor) -> np.ndarray:
            """Latents ``[k, h*w, 64]`` -> codes ``int64 [k, h*w]``: the nearest codebook entry per position."""
            return torch.cdist(E, book[None]).argmin(-1).numpy()

        def score(E: torch.Tensor) -> np.ndarray:
            """Latents ``[k, h*w, 64]`` -> graded scores ``float64 [k]`` (of their snapped codes with --snap)."""
            if args.snap:
                return obj(snap(E))
            with torch.no_grad():
                img = gen.decode_latent(E.reshape(E.shape[0], h, w, -1).permute(0, 3, 1, 2))
                return obj.activations(img).double().cpu().numpy()

        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            if args.elite_start:
                from mango.loop import maximize

                res = maximize(obj, "elite", budget=args.elite_start, seed=seed)
                starts = book[torch.as_tensor(res.best_code)][None]      # [1, h*w, 64]
                f0, used = np.array([res.best_value]), args.elite_start
            else:
                levels = rng.choice(book.shape[0], 50, replace=False)
                starts = book[levels][:, None, :].repeat(1, h * w, 1)
                f0, used = score(starts), len(levels)
            best = starts[int(np.argmax(f0))].clone()
            f_best = float(f0.max())
            mean = best.clone()
            sigma = args.sigma * float(book.std())
            trace = {used: f_best}
            while used < args.budget:
                k = min(50, args.budget - used)
                if args.method == "greedy":
                    X = best[None] + sigma * torch.randn(k, *best.shape)
                    f = score(X)
                    sigma *= float(np.exp(0.5 * ((f > f_best).mean() - 0.2) / 0.8))
                else:
                    Z = torch.randn(max(1, k // 2), *mean.shape)
                    Z = torch.cat([Z, -Z])
                    X = mean[None] + sigma * Z
                    f = score(X)
                    rank = np.argsort(np.argsort(-f))
                    util = np.maximum(0.0, np.log(len(f) / 2 + 1) - np.log(rank + 1))
                    util = util / util.sum() - 1.0 / len(f)
                    mean = mean + sigma * (torch.as_tensor(util, dtype=Z.dtype)[:, None, None] * Z).sum(0)
                used += len(f)
                i = int(np.argmax(f))
                if f[i] > f_best:
                    best, f_best = X[i].clone(), float(f[i])
                trace[used] = f_best
            snapped = float(obj(snap(best[None]))[0])
            rate = float(obj.reported(np.array([snapped]))[0])
            marks = (50, 100, 250, 500, 750, args.budget, args.elite_start)
            shown = " ".join(f"{q}:{v:.6f}" for q, v in trace.items() if q in marks)
            print(f"{args.method} {args.layer}[{unit}] seed {seed}: continuous best {f_best:.6f} "
                  f"(fired: {f_best >= 1 / 800}), snapped code {snapped:.6f}, its rate {rate:.4f}, "
                  f"{time.perf_counter() - t0:.0f} s; best by query {shown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
