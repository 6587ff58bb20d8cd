"""Tuning / screening runs for the default-optimizer candidates (NOT the benchmark).

Runs optimizers (with parameter variants) on units of a generator + spiking target through the
loop kernel (no journal), with the target's ``tie_break`` mean-membrane term as the search
score (the stand-in for the graded readout used before it landed; ``--tie-break 0`` scores with
the target's default graded readout, and the reported "rate" is then the graded score, the rate
plus a sub-spike tie term), and reports per method: median over seeds of the best *plain firing
rate* (the best-score code re-scored without the tie term), the fraction of (unit, seed) runs that
fire, and the optimizer's own share of the loop's wall time.

Units are chosen by a rule that keeps them disjoint from ``experiments/search_quality.toml``'s
benchmark units (see ``--pipeline``): on the digits SNN every unit is fair game (the benchmark
is on the paper SNN); on the paper SNN only units whose index is not a multiple of the layer's benchmark stride
(the benchmark's candidates are every stride-th unit from 0; strides 4, 5, 3 for spiking1,
spiking2 and the outputs, as in search_quality.toml).

    python experiments/search_tune.py --pipeline digits --budget 300 --seeds 0 1 2 \\
        --method protes --method discrete-one-plus-one --method elite
    python experiments/search_tune.py --pipeline digits --method 'elite:global_frac=0' ...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PIPELINES = {
    # (generator, target, layers with their unit counts, T, tie_break)
    "digits": ("vqvae-digits", "snn-digits", {"spiking0": 16, "spiking1": 32, "spiking2": 64, "spiking_out": 10},
               16, 0.01),
    "paper": ("vqvae-cifar10", "snn-cifar10", {"spiking1": 64, "spiking2": 100, "final_spiking": 10}, 32, 0.01),
}


#: the benchmark's candidate strides (experiments/search_quality.toml): never tuned on
BENCH_STRIDE = {"spiking1": 4, "spiking2": 5, "final_spiking": 3}


def parse_method(text: str) -> tuple[str, str, dict]:
    """``name[:key=value,...]`` -> (label, name, params); values parsed as JSON when they can be."""
    name, _, rest = text.partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return text, name, params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", choices=sorted(PIPELINES), default="digits")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", action="append", required=True, help="name[:key=value,...] (repeatable)")
    ap.add_argument("--units", default=None, help="'layer:u1,u2;layer:...' (default: the pipeline's rule)")
    ap.add_argument("--silent-only", action="store_true", help="only units silent on 100 random codes")
    ap.add_argument("--per-layer", type=int, default=3, help="units per layer by the rule")
    ap.add_argument("--tie-break", type=float, default=None)
    ap.add_argument("--out", default=None, help="write the raw results (JSON)")
    ap.add_argument("--eval-batch", type=int, default=50,
                    help="the objective's micro-batch width (values do not depend on it; a batch is padded to it, "
                         "so a width above the optimizer's batch only wastes time; default 50, elite's batch)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mango.config import build_objective, validate_config
    from mango.loop import maximize

    gen, tgt, layers, T, tb = PIPELINES[args.pipeline]
    tb = tb if args.tie_break is None else args.tie_break

    def objective(layer, unit, tie):
        cfg = validate_config({"generator": {"name": gen}, "target": {"name": tgt, "layer": layer, "unit": unit,
                                                                      "T": T, "tie_break": tie},
                               "optimizer": {"name": "random"}, "budget": 1, "seed": 0,
                               "eval_batch_size": args.eval_batch})
        return build_objective(cfg)

    probe = objective(next(iter(layers)), 0, 0.0)
    codes = probe.space.sample(np.random.default_rng(12345), 100)
    images = probe.generator(probe.space.decode(codes))
    if args.units:
        chosen = [(ly, int(u)) for part in args.units.split(";") for ly, us in [part.split(":")] for u in us.split(",")]
    else:
        chosen = []
        for layer, nu in layers.items():
            tgt_all = objective(layer, 0, 0.0).target
            with torch.no_grad():
                count, _ = tgt_all.spikes(images)
            per_unit = count.reshape(count.shape[0], count.shape[1], -1).sum(-1) if count.ndim > 2 else count
            fires = (per_unit > 0).any(0).cpu().numpy()
            cand = [u for u in range(nu) if (args.pipeline != "paper" or u % BENCH_STRIDE[layer] != 0)]
            if args.silent_only:
                cand = [u for u in cand if not fires[u]]
            step = max(1, len(cand) // args.per_layer)
            chosen += [(layer, u) for u in cand[::step][: args.per_layer]]
    print("units:", chosen, flush=True)

    rows = []
    for label, name, params in map(parse_method, args.method):
        for layer, unit in chosen:
            obj = objective(layer, unit, tb)
            plain = objective(layer, unit, 0.0)
            for seed in args.seeds:
                t0 = time.perf_counter()
                t_opt = [0.0]
                from mango.optimizers import make_optimizer

                opt = make_optimizer(name, obj.space, seed=seed, budget=args.budget, params=dict(params))
                ask, tell = opt.ask, opt.tell

                def timed_ask(*a, **k):
                    s = time.perf_counter(); r = ask(*a, **k); t_opt[0] += time.perf_counter() - s; return r

                def timed_tell(*a, **k):
                    s = time.perf_counter(); r = tell(*a, **k); t_opt[0] += time.perf_counter() - s; return r

                opt.ask, opt.tell = timed_ask, timed_tell
                res = maximize(obj, opt, budget=args.budget, seed=seed)
                wall = time.perf_counter() - t0
                rate = float(plain(res.best_code[None])[0])
                # best score so far at a few query counts (how fast it climbs)
                best_so_far = np.maximum.accumulate(res.values)
                trace = {q: float(best_so_far[min(q, len(best_so_far)) - 1])
                         for q in (100, 250, 500, 750, args.budget) if q <= args.budget}
                rows.append(dict(method=label, layer=layer, unit=unit, seed=seed, best_score=float(res.best_value),
                                 rate=rate, wall=wall, opt_s=t_opt[0], trace=trace))
                print(f"{label:40s} {layer}[{unit}] s{seed}: rate {rate:.3f} score {res.best_value:.4f} "
                      f"wall {wall:.1f}s opt {100 * t_opt[0] / wall:.1f}% best score at "
                      + " ".join(f"{q}:{v:.3f}" for q, v in trace.items()), flush=True)
    print()
    print("| method | median rate (mean over units) | fired runs | opt share of wall |")
    print("| --- | --- | --- | --- |")
    for label in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == label]
        med = np.mean([np.median([r["rate"] for r in rs if (r["layer"], r["unit"]) == u]) for u in chosen])
        fired = np.mean([r["rate"] > 0 for r in rs])
        share = sum(r["opt_s"] for r in rs) / sum(r["wall"] for r in rs)
        print(f"| {label} | {med:.3f} | {fired:.2f} | {100 * share:.1f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "units": chosen, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
