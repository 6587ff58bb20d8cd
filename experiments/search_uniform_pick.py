"""How well elite's design picks the flat textures a unit likes: ``uniform_pick="model"`` vs ``"random"``.

On the paper pipeline (``vqvae-cifar10`` + ``snn-cifar10``, T = 32) every one of the 512 *uniform codes*
(one codebook entry at all 64 positions: a flat texture) is scored once for every unit of ``spiking1``,
``spiking2`` and the outputs (:meth:`~mango.targets.spiking.SpikingTarget.layer_graded`, the graded
readout). Then, for each unit whose index is NOT a multiple of the search-quality benchmark's stride
(``experiments/search_quality.toml``: those are never tuned on), the real ``elite`` optimizer runs its
first four batches of 50 on a stand-in objective that looks the score up: a uniform code scores its
texture's real score, a mixed code the mean of its entries' texture scores (mixed codes only fill
the batches here; no natural starts, which need the generator's encoder). Reported per layer and mode,
over ``--seeds``:

* the best texture among the uniform codes asked, as a fraction of the best of all 512 (mean);
* how often that is the best texture of all 512;
* of the units silent on 100 random codes (``numpy.random.default_rng(12345)``, as in
  ``experiments/search_tune.py``) that some texture fires, how many the asked textures fire (mean).

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_uniform_pick.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from mango import registry
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from search_tune import BENCH_STRIDE    # the benchmark's candidate strides: their units are left out


def scores(target, gen, codes: np.ndarray) -> np.ndarray:
    """Graded score ``[m, units]`` of every unit of the target's layer for ``codes [m, d]``."""
    sp = gen.space
    with torch.no_grad():
        return np.concatenate([target.layer_graded(gen(sp.decode(codes[i:i + 128]))).numpy()
                               for i in range(0, len(codes), 128)])


def asked_textures(table: np.ndarray, V: np.ndarray, space, pick: str, seed: int, batches: int = 4) -> list[int]:
    """Codebook entries of the uniform codes elite asks in its first ``batches`` batches of 50 on the
    look-up objective of ``table [n]`` (one texture score per entry)."""
    obj = FunctionObjective(lambda I: table[np.asarray(I)].mean(1), space, name="textures")
    obj.generator = SimpleNamespace(code_vectors=lambda: V)
    opt = make_optimizer("elite", space, batch_size=50, seed=seed, params={"starts": None, "uniform_pick": pick})
    opt.bind(obj)
    levels: list[int] = []
    for _ in range(batches):
        I = opt.ask()
        levels += [int(r[0]) for r in I if r.min() == r.max()]
        opt.tell(I, obj(I))
    return levels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    gen = registry.create("generator", "vqvae-cifar10", {})
    sp = gen.space
    V = np.asarray(gen.code_vectors(), dtype=np.float32)
    textures = np.repeat(np.arange(sp.n)[:, None], sp.d, axis=1)
    probe = sp.sample(np.random.default_rng(12345), 100)
    print("| layer | units | pick | best asked / best of 512 | finds the best | silent units fired (of those a texture fires) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layer, stride in BENCH_STRIDE.items():
        t = registry.create("target", "snn-cifar10", {"layer": layer, "unit": 0, "T": 32})
        S, S0 = scores(t, gen, textures), scores(t, gen, probe)
        with torch.no_grad():
            t(gen(sp.decode(probe[:1])))                 # unit 0 (a channel over its positions) sets P
        one = t.g / (t.positions * 32)                   # the score of one spike
        units = [u for u in range(S.shape[1]) if u % stride]
        silent = [u for u in units if S0[:, u].max() < one and S[:, u].max() >= one]
        for pick in ("model", "random"):
            rel, top, fired = [], [], []
            for seed in args.seeds:
                n_fired = 0
                for u in units:
                    best = S[asked_textures(S[:, u], V, sp, pick, 1000 * seed + u), u].max()
                    rel.append(best / S[:, u].max())
                    top.append(best == S[:, u].max())
                    n_fired += u in silent and best >= one
                fired.append(n_fired)
            print(f"| {layer} | {len(units)} | {pick} | {np.mean(rel):.3f} | {np.mean(top):.2f} | "
                  f"{np.mean(fired):.1f} / {len(silent)} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s, seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
