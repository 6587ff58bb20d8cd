"""Why hard silent ``spiking1`` channels of the paper SNN stay silent: a white-box diagnostic.

Runs on channels OUTSIDE the search-quality benchmark only (index not a multiple of 4, the
benchmark's ``spiking1`` stride in ``experiments/search_quality.toml``); it reads the network's
internal state, so it is a diagnosis of the readout and the landscape, not a search method.

1. **Quiet images come closest.** Over the 512 flat textures (one codebook entry at every
   position), the Spearman correlation between a channel's best late peak (max over the second
   half of the presentation and over its 5 x 5 positions of the membrane; threshold 1) and the
   total spike count of ``spiking0``, the layer that drives it. A channel with little positive
   weight into it is inhibited by almost any upstream activity.
2. **Which score a climb can follow.** A (1 + ``lam``) hill climb from the channel's best texture
   (each child changes 1 or 2 random positions to random codebook entries; the best child replaces
   the parent when it is at least as good), for ``--budget`` evaluations, on three scores of the
   same forward pass: ``max``, the max over positions of the late peak; ``H``, the graded readout's
   peak term for a channel (half mean, half max over positions of the squashed late peak); and
   ``readout``, the target's graded score itself (``H`` plus the mean-membrane and earliness
   terms). Each plus 10 x its spike count, so a spike always wins. It reports the evaluation at
   which the first child fired, or the best late peak reached.

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_silent_channels.py \
        --units 17 55 --budget 1000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mango import registry
from mango.targets.spiking import _squash, graded_score
from search_screen_designs import decode    # images of codes, decoded in chunks


def stats(target, images: torch.Tensor, unit: int, chunk: int = 64) -> tuple[np.ndarray, ...]:
    """Per image: the unit's spikes (sum over positions), its late peak per position ``[m, 25]``,
    and its graded score (the target's own readout, from the same run), for ``images [m, 3, 32, 32]``."""
    n, lp, sc = [], [], []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            _, st = target.stats(images[i:i + chunk])
            k = st.n_spikes.shape[0]
            f = lambda a: a[:, unit].reshape(k, -1)                 # noqa: E731  [k, positions]
            n.append(f(st.n_spikes).sum(1).numpy())
            lp.append(f(st.late_peak).to(torch.float64).numpy())
            sc.append(graded_score(f(st.n_spikes), f(st.late_peak), f(st.first), target.T, target.thr, target.g,
                                   mem_sum=f(st.mem_sum)).numpy())
    return np.concatenate(n), np.concatenate(lp), np.concatenate(sc)


def climb_score(kind: str, n: np.ndarray, lp: np.ndarray, graded: np.ndarray) -> np.ndarray:
    """The score a climb follows (see the module docstring); one spike outranks any tie."""
    if kind == "max":
        tie = lp.max(1)
    elif kind == "H":
        s = _squash(torch.from_numpy(lp), 1.0).numpy()
        tie = 0.5 * s.mean(1) + 0.5 * s.max(1)
    else:
        return graded
    return 10.0 * n + tie


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, nargs="+", default=[17, 55], help="spiking1 channels (not multiples of 4)")
    ap.add_argument("--budget", type=int, default=1000, help="evaluations per climb")
    ap.add_argument("--lam", type=int, default=32, help="children per climb step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objectives", nargs="+", default=["max", "H", "readout"], choices=["max", "H", "readout"])
    args = ap.parse_args(argv)
    bad = [u for u in args.units if u % 4 == 0 or not 0 <= u < 64]
    if bad:
        ap.error(f"units {bad} are benchmark candidates (multiples of 4) or out of range 0..63; "
                 "choose spiking1 channels whose index is not a multiple of 4")
    torch.set_num_threads(2)
    t0 = time.time()
    gen = registry.create("generator", "vqvae-cifar10", {})
    textures = np.repeat(np.arange(int(gen.space.n))[:, None], int(gen.space.d), 1)
    images = decode(gen, gen.space, textures)                     # once, for every layer and channel
    up = registry.create("target", "snn-cifar10", {"layer": "spiking0", "unit": 0, "T": 32})
    with torch.no_grad():
        spikes0 = torch.cat([up.stats(images[i:i + 64])[1].n_spikes for i in range(0, len(images), 64)])
    act = spikes0.reshape(len(images), -1).sum(1).numpy()
    from scipy.stats import spearmanr

    print(f"{len(textures)} textures; spiking0 spikes per image: quietest {act.min():.0f}, median "
          f"{np.median(act):.0f} (of {spikes0[0].numel() * up.T} neuron-steps)\n")
    print("| channel | textures that fire it | best texture's late peak | Spearman(late peak, -spiking0 spikes) |")
    print("| --- | --- | --- | --- |")
    per_unit = {}
    for u in args.units:
        t = registry.create("target", "snn-cifar10", {"layer": "spiking1", "unit": u, "T": 32})
        n, lp, sc = stats(t, images, u)
        per_unit[u] = (t, n, lp, sc)
        rho = spearmanr(lp.max(1), -act).correlation
        print(f"| spiking1[{u}] | {(n > 0).sum()} | {lp.max():.2f} | {rho:.2f} |")
    print(f"\n(1 + {args.lam}) climbs from the best texture, 1-2 random point changes, {args.budget} evaluations, "
          f"seed {args.seed}:\n")
    print("| channel | score followed | first spike at evaluation | best late peak (max over positions) | s |")
    print("| --- | --- | --- | --- | --- |")
    for u in args.units:
        t, n0, lp0, sc0 = per_unit[u]
        for kind in args.objectives:
            rng = np.random.default_rng(args.seed)
            s0 = climb_score(kind, n0, lp0, sc0)
            j = int(np.argmax(s0))
            parent, pval, peak = textures[j].copy(), float(s0[j]), float(lp0[j].max())
            used, fired_at, t1 = 0, None, time.time()
            while used < args.budget and fired_at is None:
                kids = np.repeat(parent[None], args.lam, 0)
                for kid in kids:
                    m = int(rng.integers(1, 3))
                    kid[rng.choice(kid.size, m, replace=False)] = rng.integers(int(gen.space.n), size=m)
                n, lp, sc = stats(t, decode(gen, gen.space, kids), u)
                s = climb_score(kind, n, lp, sc)
                hit = np.nonzero(n > 0)[0]
                if len(hit):
                    fired_at = used + int(hit[0]) + 1
                used += len(kids)
                peak = max(peak, float(lp.max()))
                b = int(np.argmax(s))
                if s[b] >= pval:
                    parent, pval = kids[b].copy(), float(s[b])
            print(f"| spiking1[{u}] | {kind} | {fired_at if fired_at else f'> {used}'} | {peak:.2f} | "
                  f"{time.time() - t1:.0f} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
