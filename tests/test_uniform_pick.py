"""elite's uniform codes picked by a model (``uniform_pick="model"``, the default): after a few random
flat textures, the next ones are the codebook entries a kernel model over the codebook vectors ranks
highest, so the design holds the textures a unit likes instead of a random sample of them."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_model_needs_code_vectors, assert_resumes_identically

N, D = 256, 8
SPACE = CodebookSpace(d=16, n=N, shape=(4, 4))
PARAMS = {"starts": None, "uniform_codes": 32, "uniform_random": 8, "uniform_frac": 0.4}


def _texture_problem(seed: int):
    """A unit that sums a drive linear in the codebook vectors over positions and fires above a high
    threshold: a flat texture of entry ``v`` scores ``relu(V[v] @ u - q)``, ``q`` the 95th percentile
    of ``V @ u`` (13 of the 256 entries drive it at all). Returns the objective and the drive ``V @ u``."""
    rng = np.random.default_rng(seed)
    V = rng.normal(0.0, 1.0, (N, D))
    u = rng.normal(0.0, 1.0, D)
    g = V @ u
    q = float(np.quantile(g, 0.95))
    obj = FunctionObjective(lambda I: np.maximum(g[np.asarray(I)].mean(1) - q, 0.0) + 1e-3 * g[np.asarray(I)].mean(1),
                            SPACE, name="texture")
    obj.generator = SimpleNamespace(code_vectors=lambda: V.astype(np.float32))
    return obj, g


def _texture_scores(paper_weights, layer: str, T: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The paper VQ-VAE's codebook vectors ``[512, 64]`` and the graded score of every flat texture (one
    codebook entry at all 64 positions) for every unit of ``layer`` of the paper SNN: ``[512, units]``."""
    import torch

    from mango import registry

    gen = registry.create("generator", "vqvae-cifar10", {"weights": str(paper_weights / "vqvae_cifar10.pt")})
    target = registry.create("target", "snn-cifar10", {"weights": str(paper_weights), "layer": layer, "unit": 0,
                                                        "T": T})
    sp = gen.space
    U = np.repeat(np.arange(sp.n)[:, None], sp.d, axis=1)
    with torch.no_grad():
        out = [target.layer_graded(gen(sp.decode(U[i:i + 128]))).numpy() for i in range(0, sp.n, 128)]
    return np.asarray(gen.code_vectors(), dtype=np.float32), np.concatenate(out)


def test_model_picks_find_the_textures_real_units_like(paper_weights):
    """On the paper pipeline's codebook and the real responses of 20 `spiking2` neurons (outside the
    search-quality benchmark: index not a multiple of 5) to its 512 flat textures: the best texture among
    the 64 uniform codes asked in the first four batches of 50, relative to the best of all 512. Mixed
    codes score the mean of their entries' texture scores (they only fill the batches here)."""
    V, S = _texture_scores(paper_weights, "spiking2")
    units = [u for u in range(S.shape[1]) if u % 5][:20]
    space = CodebookSpace(d=64, n=512, shape=(8, 8))
    rel: dict[str, list[float]] = {"model": [], "random": []}
    for u in units:
        table = S[:, u]
        obj = FunctionObjective(lambda I, t=table: t[np.asarray(I)].mean(1), space, name="textures")
        obj.generator = SimpleNamespace(code_vectors=lambda: V)
        for pick in rel:
            opt = make_optimizer("elite", space, batch_size=50, seed=u, params={"starts": None, "uniform_pick": pick})
            opt.bind(obj)
            levels = []
            for _ in range(4):
                I = opt.ask()
                levels += [int(r[0]) for r in I if r.min() == r.max()]
                opt.tell(I, obj(I))
            assert len(levels) >= 64
            rel[pick].append(float(table[levels].max() / table.max()))
    means = {k: float(np.mean(v)) for k, v in rel.items()}
    # measured: model 0.837, random 0.691 (an offline simulation over all 80 such neurons x 6 draws: 0.91 / 0.78)
    assert means["model"] >= means["random"] + 0.04, means


def test_every_entry_in_the_design_when_the_codebook_is_small():
    """With ``uniform_codes >= n`` (the embedded digits VQ-VAE: 32 entries) every texture is asked in the
    design: there is nothing to choose."""
    small = CodebookSpace(d=16, n=32, shape=(4, 4))
    obj32 = FunctionObjective(lambda I: np.asarray(I, dtype=float).mean(1), small, name="small")
    obj32.generator = SimpleNamespace(code_vectors=lambda: np.eye(32, dtype=np.float32))
    opt = make_optimizer("elite", small, batch_size=50, seed=0, params={"starts": None})
    opt.bind(obj32)
    assert opt._u_model is None
    first = opt.ask()
    assert sorted(int(r[0]) for r in first if r.min() == r.max()) == list(range(32))


def test_random_pick_and_noisy_mode_ask_every_uniform_code_up_front():
    """``uniform_pick="random"`` (and noisy mode, where single values are a weak base for a model) asks
    the whole seeded sample in the design, in index order; the model mode's design holds the first
    ``uniform_random`` entries of the same draw."""
    obj, _ = _texture_problem(0)
    firsts = {}
    for pick, noise in (("random", "off"), ("model", "on"), ("model", "off")):
        opt = make_optimizer("elite", SPACE, batch_size=40, seed=5, params={**PARAMS, "uniform_pick": pick,
                                                                            "noise": noise})
        opt.bind(obj)
        first = opt.ask()
        firsts[pick, noise] = [int(r[0]) for r in first if r.min() == r.max()]
    assert len(firsts["random", "off"]) == 32 and firsts["random", "off"] == sorted(firsts["random", "off"])
    assert firsts["model", "on"] == firsts["random", "off"]
    assert len(firsts["model", "off"]) == 8 and set(firsts["model", "off"]) < set(firsts["random", "off"])


def test_model_picks_need_code_vectors_and_resume_identically(tmp_path):
    obj, _ = _texture_problem(1)
    assert_model_needs_code_vectors(obj, {"uniform_pick": "model"}, "_u_model")

    def make(seed: int):
        o = make_optimizer("elite", SPACE, batch_size=12, seed=seed, params=PARAMS)
        o.bind(obj)
        return o

    opt = make(3)
    for _ in range(2):                  # 8 random textures, then the first picks of 24
        I = opt.ask()
        opt.tell(I, obj(I))
    assert 0 < opt._u_picked < 24
    b = assert_resumes_identically(opt, lambda: make(99), obj, tmp_path, steps=4)
    assert b._u_picked == opt._u_picked > 4


@pytest.mark.parametrize("params, msg", [
    ({"uniform_pick": "best"}, "uniform_pick must be one of 'model', 'random', got 'best'"),
    ({"uniform_random": 1}, r"uniform_random must be >= 2 and uniform_frac in \(0, 1\], got 1, 0.36"),
    ({"uniform_frac": 0}, r"uniform_random must be >= 2 and uniform_frac in \(0, 1\], got 10, 0"),
    ({"uniform_frac": 1.5}, r"uniform_random must be >= 2 and uniform_frac in \(0, 1\], got 10, 1.5")])
def test_bad_uniform_pick_names_the_value(params, msg):
    with pytest.raises(ConfigError, match=msg):
        make_optimizer("elite", SPACE, params=params)
