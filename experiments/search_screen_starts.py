"""Screen start designs on the paper pipeline: how many units of each spiking layer that never fire
on 100 random codes fire for some uniform code (one codebook entry at every position) or some
natural-image code (mango.optimizers.starts), and the mean over units of the best rate.

Aggregate over every unit of the layer (no search, no per-unit choice): a property of the
generator, measured once to decide the default design of the "elite" optimizer.

    MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10 python experiments/search_screen_starts.py
"""
import numpy as np
import torch

from mango import registry
from mango.optimizers.starts import natural_start_codes


def main():
    torch.set_num_threads(2)
    gen = registry.create("generator", "vqvae-cifar10", {})
    sp = gen.space
    rnd = sp.sample(np.random.default_rng(0), 100)
    uniform = np.repeat(np.arange(sp.n)[:, None], sp.d, 1)
    nat = natural_start_codes(gen)
    sub = np.random.default_rng(1).choice(sp.n, 32, replace=False)
    for layer in ["spiking1", "spiking2", "final_spiking"]:
        t = registry.create("target", "snn-cifar10", {"layer": layer, "unit": 0, "T": 32})

        def rates(codes):
            out = []
            with torch.no_grad():
                for i in range(0, len(codes), 64):
                    c, _ = t.spikes(gen(sp.decode(codes[i:i + 64])))
                    c = c.reshape(c.shape[0], c.shape[1], -1).float().mean(-1) if c.ndim > 2 else c.float()
                    out.append(c.numpy())
            return np.concatenate(out) / 32  # [images, units] firing rate

        R, U, N = rates(rnd), rates(uniform), rates(nat)
        silent = R.max(0) == 0
        print(f"{layer}: {silent.sum()} of {len(silent)} silent on 100 random codes; of these fire on "
              f"all {sp.n} uniform codes: {(U.max(0)[silent] > 0).sum()}, on 32 of them: "
              f"{(U[sub].max(0)[silent] > 0).sum()}, on {len(nat)} natural codes: {(N.max(0)[silent] > 0).sum()} | "
              f"mean best rate over all units: random {R.max(0).mean():.3f}, uniform {U.max(0).mean():.3f}, "
              f"32 uniform {U[sub].max(0).mean():.3f}, natural {N.max(0).mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
