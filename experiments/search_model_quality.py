"""How well do score models predict the children elite asks? (paper pipeline, units OUTSIDE the benchmark)

Runs ``elite`` (the default when this was written, 1,000 queries, graded readout) on tuning units of the paper pipeline and
keeps every evaluated code and score in order (``--save``/``--load`` an ``.npz`` per run). Then, at
query counts ``t`` (``--at``), each model is fitted to the 400 codes before ``t`` and asked about the
next 50: the Spearman rank correlation of predicted and measured **values**, of predicted and
measured **gains over the parent** (the parent of a code taken as its nearest earlier code in
Hamming distance, best value among ties), and the *lift*: among the 10 codes with the best
predicted gain, the fraction at least as good as their parent minus that fraction over all 50.

Models (all on the codes' codebook vectors ``E``, centred, mean squared row norm 1, except one-hot):

* ``linear``: elite's directional model itself (ridge regression linear in the vectors,
  :class:`mango.optimizers.directional.EmbeddingLinearModel`, reg 1);
* ``one-hot``: ridge regression on one-hot (position, value) features (an additive model);
* ``rbf``: elite's kernel screen model (:class:`mango.optimizers.kernel.KernelScreen`: RBF kernel
  ridge regression, width 0.2 x the median squared distance, ridge 0.1).

The codes were asked by elite, whose directional children were chosen with the linear model, so
that model is scored partly on children it picked (a selection bias against it); the others were
never used to pick.

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_model_quality.py \\
        --units 'spiking2:88:1;final_spiking:1:1;spiking2:4:2;spiking1:5:2' --save /tmp/hist
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from search_tune import BENCH_STRIDE    # the benchmark's candidate strides: their units are refused

WINDOW, NEXT = 400, 50


def record(layer: str, unit: int, seed: int, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Every code ``int [N, 64]`` and score ``[N]`` of one elite run, in the order told."""
    from mango.config import build_objective, validate_config
    from mango.loop import maximize
    from mango.optimizers import make_optimizer

    cfg = validate_config({"generator": {"name": "vqvae-cifar10"},
                           "target": {"name": "snn-cifar10", "layer": layer, "unit": unit, "T": 32},
                           "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 100})
    obj = build_objective(cfg)
    opt = make_optimizer("elite", obj.space, seed=seed, budget=budget, params={})
    C, V, tell = [], [], opt.tell

    def keep(codes, values, *a, **k):
        C.append(np.asarray(codes).copy())
        V.append(np.asarray(values, dtype=np.float64).copy())
        return tell(codes, values, *a, **k)

    opt.tell = keep
    maximize(obj, opt, budget=budget, seed=seed)
    return np.concatenate(C), np.concatenate(V)


def _onehot_ridge(X: np.ndarray, y: np.ndarray, reg: float = 1.0):
    """Ridge regression on features ``X [N, F]`` (dual form, centred): a predictor of new rows."""
    mu = X.mean(0)
    Xc = X - mu
    K = Xc @ Xc.T
    a = np.linalg.solve(K + (reg * np.trace(K) / len(K) + 1e-9) * np.eye(len(K)), y - y.mean())
    w = Xc.T @ a
    return lambda Z: (Z - mu) @ w


def models(V: np.ndarray, d: int) -> dict:
    """Model name -> ``fit(codes [N, d], values [N]) -> predict(codes [m, d]) -> [m]`` (values up to a
    constant: only ranks are compared). ``linear`` and ``rbf`` are the classes elite uses."""
    from mango.optimizers.directional import EmbeddingLinearModel
    from mango.optimizers.kernel import KernelScreen

    n = len(V)

    def linear(C, y):
        m = EmbeddingLinearModel(V, d, reg=1.0, window=WINDOW)
        m.add_codes(C)
        m.fit(y)
        G = m.gains(C[-1])                       # [d, n]: value of every (position, value) vs one code
        return lambda Z: G[np.arange(d), Z].sum(1)

    def onehot(C):
        o = np.zeros((len(C), d * n))
        o[np.arange(len(C))[:, None], np.arange(d) * n + C] = 1.0
        return o

    def rbf(C, y):
        m = KernelScreen(V, d, window=WINDOW)
        m.fit(C, y)
        return m.predict

    return {"linear": linear,
            "one-hot": lambda C, y: (lambda f: lambda Z: f(onehot(Z)))(_onehot_ridge(onehot(C), y)),
            "rbf": rbf}


def quality(C: np.ndarray, y: np.ndarray, at: list[int], fits: dict) -> dict[str, tuple[float, float, float]]:
    """Per model: mean over ``at`` of (value rho, gain rho, top-10 lift)."""
    from scipy.stats import spearmanr

    out: dict[str, list] = {k: [] for k in fits}
    for t in at:
        if t + NEXT > len(C):
            continue
        tr, te = slice(max(0, t - WINDOW), t), slice(t, t + NEXT)
        ham = (C[te][:, None, :] != C[:t][None]).sum(-1)
        par = np.array([np.flatnonzero(h == h.min())[np.argmax(y[:t][h == h.min()])] for h in ham])
        gain = y[te] - y[par]
        for name, fit in fits.items():
            m = fit(C[tr], y[tr])
            pc, pp = m(C[te]), m(C[par])
            top = np.argsort(-(pc - pp))[:10]
            out[name].append((np.nan_to_num(spearmanr(pc, y[te]).correlation),
                              np.nan_to_num(spearmanr(pc - pp, gain).correlation),
                              np.mean(gain[top] >= 0) - np.mean(gain >= 0)))
    return {k: tuple(np.mean(v, axis=0)) for k, v in out.items() if v}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="spiking2:88:1;final_spiking:1:1;spiking2:4:2;spiking1:5:2",
                    help="'layer:unit:seed;...' (tuning units only)")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--at", default="110,150,200,250,300,350,400,450,500,550,600,650,700,750,800,850,900,950",
                    help="query counts at which the models are fitted (comma-separated)")
    ap.add_argument("--save", type=Path, default=None, help="folder to save each run's codes and scores (.npz)")
    ap.add_argument("--load", type=Path, default=None, help="folder to load them from instead of running")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from mango import registry

    runs = [(ly, int(u), int(s)) for part in args.units.split(";") for ly, u, s in [part.split(":")]]
    for ly, u, _ in runs:
        if u % BENCH_STRIDE[ly] == 0:
            raise SystemExit(f"{ly}[{u}] is a benchmark candidate (index a multiple of {BENCH_STRIDE[ly]}): "
                             "use tuning units only")
    gen = registry.create("generator", "vqvae-cifar10", {})
    fits = models(np.asarray(gen.code_vectors(), dtype=np.float64), int(gen.space.d))
    at = [int(a) for a in args.at.split(",")]
    t0 = time.time()
    print(f"window {WINDOW}, next {NEXT}, fitted at {at}\n")
    print("| run | model | value rho | gain rho | top-10 lift |\n| --- | --- | --- | --- | --- |")
    for ly, u, s in runs:
        name = f"{ly}_{u}_s{s}.npz"
        if args.load:
            h = np.load(args.load / name)
            C, y = h["codes"], h["values"]
        else:
            C, y = record(ly, u, s, args.budget)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                np.savez(args.save / name, codes=C, values=y)
        for model, (rv, rg, lift) in quality(C, y, at, fits).items():
            print(f"| {ly}[{u}] s{s} (best {y.max():.3f}) | {model} | {rv:.2f} | {rg:.2f} | {lift:+.2f} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
