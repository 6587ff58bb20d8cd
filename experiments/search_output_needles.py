"""Diagnostic: why hard output neurons stop at 7-9 spikes, four probes (nothing here is used by the default).

On tuning output neurons of the paper SNN (``final_spiking``, index not a multiple of 3: never a benchmark
or held-out unit; others are refused), T = 32, scores are the graded readout (spikes + tie term, in spikes):

``deep``      elite (1,000 queries) with the readout's tie term replaced by a "deep drive": the neuron's input
              weights (``linear2``, read white-box: a feasibility probe, not a candidate readout) applied to
              each ``spiking2`` neuron's rate plus ``--lam`` / T times its late-peak proximity to threshold
              (``exp(min(0, peak - thr))`` over the second half of T), squashed below one spike; prints the
              best score at 250 / 500 / 1,000 queries and the best code's true spike count. ``--lam 0``
              with ``--readout plain`` is the default readout, for a side-by-side run.
``starts``    no search: the spikes of every tuning output neuron for 1,500 random crops (8-100 % of the short
              side, half mirrored) of scikit-image's colour photographs, the 512 flat textures, 1,000 random
              codes, and 300 smooth random colour fields per (k, contrast), all encoded through the VQ-VAE.
``layout``    CMA-ES (the ``cma`` package, population 20) over a k x k colour layout (sigmoid of the search
              variables, nearest-upsampled to 32 x 32, encoded through the VQ-VAE), 1,000 evaluations, from
              mid-grey with step ``--sigma`` (logit units).
``portfolio`` ``--split`` queries of the ``layout`` search (k = 2, step ``--sigma``, default 0.5), then elite
              for the rest of 1,000 queries, started from the layout search's 8 best distinct codes and the
              photo starts; prints the layout search's best and the best of both at 1,000.
``coarse``    runs the gradient AM (1,000 queries, seed 0), block-averages its image to k x k
              (k = 2, 4, 8, 16; nearest and bilinear upsampling), re-encodes and scores it; then perturbs the
              2 x 2 layout's colours by N(0, sd) (200 each) to measure how wide that layout's basin is.

    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_needles.py deep --unit 1 --seed 1 --lam 1
    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_needles.py starts        # ~3 min
    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_needles.py layout --unit 1 --k 4
    MANGO_PAPER_WEIGHTS=../shared/weights/cifar10 python experiments/search_output_needles.py coarse --unit 1  # ~5 min

One torch thread per process (the runs of the tuning record ran two at a time on 2 cores).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from mango.config import build_objective, validate_config
from mango.loop import maximize
from mango.optimizers.starts import encode_images

TUNING_UNITS = (1, 2, 4, 5, 7, 8)  # final_spiking indices that are not multiples of the benchmark stride 3
T = 32


#: the tuning rule of every layer (index not a multiple of the benchmark's stride there)
STRIDES = {"spiking1": 4, "spiking2": 5, "final_spiking": 3}


def objective(unit: int, layer: str = "final_spiking"):
    return build_objective(validate_config({
        "generator": {"name": "vqvae-cifar10"},
        "target": {"name": "snn-cifar10", "layer": layer, "unit": unit, "T": T},
        "optimizer": {"name": "random"}, "budget": 1, "seed": 0, "eval_batch_size": 50}))


def step_loop(o, I: np.ndarray) -> dict[str, torch.Tensor]:
    """A plain snnTorch step loop over the net's children: ``spiking2`` spikes and membranes ``[T, k, 100]``
    (float64), the output layer's spikes ``[T, k, 10]`` (float64) and its input current ``cur`` ``[T, k, 10]``
    (float32, as the net computes it). ``experiments/search_output_moves.py`` reads its drive from ``cur``."""
    import snntorch.utils as su

    net = o.target.net
    x = torch.as_tensor(np.asarray(o.images(I)), dtype=torch.float32).contiguous()
    mems: dict[str, torch.Tensor] = {}
    s2, m2, out, cur = [], [], [], []
    with torch.no_grad():
        su.reset(net)
        for _ in range(T):
            h = x
            for name, m in net.named_children():
                if hasattr(m, "init_leaky"):
                    if name not in mems:
                        mems[name] = m.init_leaky()
                    if name == "final_spiking":
                        cur.append(h.clone())
                    h, mems[name] = m(h, mems[name])
                    if name == "spiking2":
                        s2.append(h.clone())
                        m2.append(mems[name].clone())
                    elif name == "final_spiking":
                        out.append(h.clone())
                else:
                    h = m(h)
    return {"s2": torch.stack(s2).double(), "m2": torch.stack(m2).double(), "out": torch.stack(out).double(),
            "cur": torch.stack(cur)}


def cmd_deep(args: argparse.Namespace) -> None:
    o = objective(args.unit)
    net, thr = o.target.net, float(o.target.thr)
    w = net.linear2.weight[args.unit].detach().double()
    b = float(net.linear2.bias[args.unit].detach())

    def deep(I: np.ndarray) -> np.ndarray:
        r = step_loop(o, I)
        spikes = r["out"][:, :, args.unit].sum(0)
        late = r["m2"][T // 2:].max(0).values
        g = r["s2"].mean(0) + args.lam * torch.exp(torch.clamp(late - thr, max=0.0)) / T
        return ((spikes + 0.999 * torch.sigmoid(2.0 * (g @ w + b))) / T).numpy()

    if args.readout == "deep":
        o._evaluate = deep          # a probe: the objective's scores replaced in this process only
    t0 = time.perf_counter()
    res = maximize(o, "elite", budget=1000, seed=args.seed, batch_size=50)
    best = np.asarray(res.best_so_far) * T
    spikes = float(step_loop(o, np.asarray(res.best_code)[None])["out"][:, 0, args.unit].sum())
    print(f"final_spiking[{args.unit}] seed {args.seed} readout {args.readout} lam {args.lam}: best score at "
          f"250/500/1000 {best[249]:.2f} {best[499]:.2f} {best[999]:.2f}; spikes of the best code {spikes:.0f} "
          f"({time.perf_counter() - t0:.0f} s)")


def _encode(o, pixels: torch.Tensor) -> np.ndarray:
    """Codes ``[m, 64]`` of images ``[m, 3, 32, 32]`` in ``[0, 1]`` through the VQ-VAE encoder (200 at a time)."""
    x = np.asarray(pixels, dtype=np.float32)
    return np.concatenate([encode_images(o.generator, x[i:i + 200]) for i in range(0, len(x), 200)])


def _spikes(o, C: np.ndarray) -> np.ndarray:
    return np.concatenate([step_loop(o, C[i:i + 100])["out"].sum(0).numpy() for i in range(0, len(C), 100)])


def cmd_starts(args: argparse.Namespace) -> None:
    from skimage import data as skdata
    from skimage.transform import resize

    o = objective(TUNING_UNITS[0])
    rng = np.random.default_rng(0)
    photos = ("astronaut", "cat", "chelsea", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry",
              "logo", "retina", "rocket")
    crops = []
    for name in photos:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float32)[..., :3]
        img /= 255.0 if img.max() > 1 else 1.0
        h, w = img.shape[:2]
        for _ in range(150):
            s = int(min(h, w) * rng.uniform(0.08, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            c = img[y:y + s, x:x + s]
            crops.append(resize(c[:, ::-1] if rng.random() < 0.5 else c, (32, 32), order=1,
                                anti_aliasing=True).transpose(2, 0, 1))
    sets = {"photo crops (1,500)": _encode(o, torch.as_tensor(np.clip(np.stack(crops), 0, 1), dtype=torch.float32)),
            "flat textures (512)": np.repeat(np.arange(512)[:, None], 64, 1),
            "random codes (1,000)": np.random.default_rng(1).integers(0, 512, (1000, 64))}
    for k in (1, 2, 3, 4, 6):
        for contrast in (1.0, 0.4):
            base = rng.uniform(0, 1, (300, 3, 1, 1))
            P = np.clip(base + contrast * (rng.uniform(0, 1, (300, 3, k, k)) - 0.5), 0, 1)
            x = F.interpolate(torch.as_tensor(P, dtype=torch.float32), size=32, mode="bilinear", align_corners=False)
            sets[f"smooth fields k={k} contrast {contrast} (300)"] = _encode(o, x)
    print("max spikes (of 32) per tuning output neuron:")
    print(f"{'':40s}" + "".join(f"[{u}]".rjust(6) for u in TUNING_UNITS))
    for name, C in sets.items():
        S = _spikes(o, C)
        print(f"{name:40s}" + "".join(f"{S[:, u].max():6.0f}" for u in TUNING_UNITS))


def cmd_layout(args: argparse.Namespace) -> None:
    import cma

    o = objective(args.unit)
    k = args.k
    es = cma.CMAEvolutionStrategy(np.zeros(3 * k * k), args.sigma, {"seed": args.seed + 1, "popsize": 20,
                                                                     "verbose": -9})
    n, best, trace, t0 = 0, -1.0, {}, time.perf_counter()
    while n < 1000:
        Z = es.ask()
        p = torch.sigmoid(torch.as_tensor(np.asarray(Z), dtype=torch.float32)).view(-1, 3, k, k)
        y = o(_encode(o, F.interpolate(p, size=32, mode="nearest"))) * T
        es.tell(Z, list(-y))
        n += len(Z)
        best = max(best, float(y.max()))
        trace.update({q: best for q in (100, 250, 500, 1000) if n >= q and q not in trace})
    print(f"final_spiking[{args.unit}] seed {args.seed} k {k} sigma {args.sigma}: best score so far "
          + ", ".join(f"{q}: {v:.2f}" for q, v in trace.items()) + f" ({time.perf_counter() - t0:.0f} s)")


def _layout_search(o, k: int, sigma: float, seed: int, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """CMA-ES over k x k colour layouts from mid-grey (as ``layout``) for ``n_max`` evaluations: every code
    ``[n, 64]`` it evaluated and its score ``[n]`` (spikes + tie)."""
    import cma

    es = cma.CMAEvolutionStrategy(np.zeros(3 * k * k), sigma, {"seed": seed + 1, "popsize": 20, "verbose": -9})
    codes, vals = [], []
    while len(vals) < n_max:
        Z = es.ask()
        p = torch.sigmoid(torch.as_tensor(np.asarray(Z), dtype=torch.float32)).view(-1, 3, k, k)
        C = _encode(o, F.interpolate(p, size=32, mode="nearest"))
        y = o(C) * T
        es.tell(Z, list(-y))
        codes.append(C)
        vals.extend(float(v) for v in y)
    return np.concatenate(codes)[:n_max], np.asarray(vals)[:n_max]


def cmd_portfolio(args: argparse.Namespace) -> None:
    from mango.optimizers.starts import natural_start_codes

    o = objective(args.unit, args.layer)
    scale = T if args.layer == "final_spiking" else 1      # output neurons in spikes, others as the readout's score
    t0 = time.perf_counter()
    if args.split == 0:     # the default alone, for a side-by-side run on any layer
        res = maximize(o, "elite", budget=1000, seed=args.seed)
        print(f"{args.layer}[{args.unit}] seed {args.seed}: elite alone, best at 1,000 "
              f"{res.best_value * scale:.4g} (rate {res.best_reported:.4g}) ({time.perf_counter() - t0:.0f} s)")
        return
    C, y = _layout_search(o, 2, args.sigma, args.seed, args.split)
    order = np.argsort(-y, kind="stable")
    _, first = np.unique(C[order], axis=0, return_index=True)
    top = C[order][np.sort(first)][:8]
    nat = natural_start_codes(o.generator)
    res = maximize(o, "elite", budget=1000 - args.split, seed=args.seed,
                   params={"starts": np.concatenate([top, nat]).tolist()})
    best = max(float(y.max()) / T, float(res.best_value))
    rate = o.reported(np.asarray([best]))[0] if callable(getattr(o, "reported", None)) else best
    print(f"{args.layer}[{args.unit}] seed {args.seed}: layout CMA (sigma {args.sigma}) {args.split} queries "
          f"best {y.max() / T * scale:.4g}, then elite from its top 8 codes and the photo starts, "
          f"{1000 - args.split} queries: best of both at 1,000 {best * scale:.4g} (rate {rate:.4g}) "
          f"({time.perf_counter() - t0:.0f} s)")


def cmd_coarse(args: argparse.Namespace) -> None:
    o = objective(args.unit)
    g = o.generator
    mean = torch.tensor(g.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(g.std, dtype=torch.float32).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    res = maximize(o, "gradient", budget=1000, seed=0)
    x = o.images(np.asarray(res.best_code)[None]) * std + mean         # [1, 3, 32, 32] in [0, 1]
    print(f"final_spiking[{args.unit}]: gradient AM {res.best_value * T:.2f} ({time.perf_counter() - t0:.0f} s)")
    for k in (2, 4, 8, 16):
        small = F.adaptive_avg_pool2d(x, k)
        for mode in ("nearest", "bilinear"):
            up = F.interpolate(small, size=32, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
            print(f"  {k:2d} x {k:<2d} {mode:8s}: {float(o(_encode(o, up.clamp(0, 1)))[0]) * T:.2f}")
    p = F.adaptive_avg_pool2d(x, 2)
    rng = np.random.default_rng(0)
    for sd in (0.02, 0.05, 0.1, 0.2):
        P = (p + torch.as_tensor(rng.normal(0, sd, (200, 3, 2, 2)), dtype=torch.float32)).clamp(0, 1)
        y = o(_encode(o, F.interpolate(P, size=32, mode="nearest"))) * T
        print(f"  2 x 2 layout, colours + N(0, {sd}): median {np.median(y):.1f}, max {y.max():.1f}, "
              f"share >= 10 spikes {(y >= 10).mean():.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="probe", required=True)
    for name in ("deep", "layout", "coarse", "portfolio"):
        p = sub.add_parser(name)
        p.add_argument("--unit", type=int, default=1, help=f"a tuning output neuron: one of {TUNING_UNITS}")
        p.add_argument("--seed", type=int, default=0)
        if name == "deep":
            p.add_argument("--readout", choices=("deep", "plain"), default="deep",
                           help="plain: the default graded readout, for the side-by-side run")
            p.add_argument("--lam", type=float, default=1.0, help="weight of the spiking2 proximity term")
        if name == "layout":
            p.add_argument("--k", type=int, default=4, help="layout size k (3 k^2 search variables)")
        if name in ("layout", "portfolio"):
            p.add_argument("--sigma", type=float, default=1.5 if name == "layout" else 0.5,
                           help="CMA-ES initial step in logit units (1.5: nearly any colour at first; 0.5: muted)")
        if name == "portfolio":
            p.add_argument("--split", type=int, default=400,
                           help="queries of the layout search (k = 2) before elite (0: elite alone)")
            p.add_argument("--layer", choices=tuple(STRIDES), default="final_spiking",
                           help="the unit's layer (its tuning units only: index not a multiple of "
                                + ", ".join(f"{v} in {k}" for k, v in STRIDES.items()) + ")")
    sub.add_parser("starts")
    args = ap.parse_args()
    layer = getattr(args, "layer", "final_spiking")
    if layer != "final_spiking" and args.unit % STRIDES[layer] == 0:
        ap.error(f"--unit {args.unit} of {layer}: benchmark and held-out units are not probed; a tuning unit's index "
                 f"is not a multiple of {STRIDES[layer]}")
    if layer == "final_spiking" and getattr(args, "unit", TUNING_UNITS[0]) not in TUNING_UNITS:
        ap.error(f"--unit {args.unit}: benchmark and held-out output neurons are not probed; "
                 f"valid choices: {', '.join(map(str, TUNING_UNITS))}")
    torch.set_num_threads(1)
    {"deep": cmd_deep, "starts": cmd_starts, "layout": cmd_layout, "coarse": cmd_coarse,
     "portfolio": cmd_portfolio}[args.probe](args)


if __name__ == "__main__":
    main()
