"""Directional moves (issue 12 item 2): elite's ridge model of the score, linear in the codebook's
vectors, estimates where to move from black-box values alone."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.optimizers.directional import EmbeddingLinearModel
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_model_needs_code_vectors, assert_resumes_identically, run_elite


def _embedding_problem(seed: int, d: int = 24, n: int = 256, D: int = 8):
    """A score that is a saturating function of a drive linear in the codes' vectors (like a neuron
    integrating a decoded image): a codebook ``V [n, D]``, per-position weights ``w [d, D]``."""
    rng = np.random.default_rng(seed)
    V = rng.normal(0.0, 1.0, (n, D))
    w = rng.normal(0.0, 1.0, (d, D))
    drive = lambda I: np.einsum("kpd,pd->k", V[np.asarray(I)], w)  # noqa: E731
    fn = lambda I: np.tanh(drive(I) / 40.0)                         # noqa: E731
    obj = FunctionObjective(fn, CodebookSpace(d=d, n=n), name="embedding-linear")
    obj.generator = SimpleNamespace(code_vectors=lambda: V.astype(np.float32))
    return obj, V, w, drive


def test_model_recovers_the_gains_of_a_linear_score():
    obj, V, w, drive = _embedding_problem(0)
    I = obj.space.sample(np.random.default_rng(1), 300)
    model = EmbeddingLinearModel(V, obj.space.d, reg=0.1, window=250)
    model.add_codes(I[:120])
    model.add_codes(I[120:])                                       # the window keeps the last 250
    assert model.n_added == 300 and model._K.shape == (250, 250)
    feats = model.E[I[50:]].reshape(250, -1)                       # incremental Gram == direct one
    np.testing.assert_allclose(model._K, feats @ feats.T, rtol=1e-5, atol=1e-4)
    assert model.fit(drive(I))
    parent = I[0]
    true_gain = w @ V.T - (w * V[parent]).sum(1)[:, None]          # [d, n]
    G = model.gains(parent)
    assert G.shape == (obj.space.d, obj.space.n)
    np.testing.assert_allclose(G[np.arange(obj.space.d), parent], 0.0, atol=1e-9)
    assert np.corrcoef(G.ravel(), true_gain.ravel())[0, 1] > 0.9
    assert not model.fit(np.ones(len(I)))                          # flat scores: no model


def _run(obj, frac: float, seed: int, budget: int = 400, bind: bool = True):
    # random textures: the model-picked ones (tests/test_uniform_pick.py) would use the same code vectors
    return run_elite(obj, {"starts": None, "direct_frac": frac, "uniform_pick": "random"}, seed, budget, bind)


def test_directional_moves_climb_faster_than_local_moves_alone():
    """Same problems and seeds, 400 queries: the best drive found with half of each batch from the
    model vs with none (the code the model never sees is the point: 256 values per position)."""
    wins = []
    for seed in range(3):
        obj, _, _, drive = _embedding_problem(10 + seed)
        on = _run(obj, 0.5, seed)
        off = _run(_embedding_problem(10 + seed)[0], 0.0, seed)
        wins.append(drive(on.elite_I[:1])[0] - drive(off.elite_I[:1])[0])
    assert min(wins) > 0, wins


def test_directional_needs_code_vectors_and_is_off_without_them():
    obj, *_ = _embedding_problem(3)
    assert_model_needs_code_vectors(obj, {"direct_frac": 0.5}, "_direct")
    with pytest.raises(ConfigError, match="direct_frac"):
        make_optimizer("elite", obj.space, params={"direct_frac": 1.5})


def test_directional_resumes_identically(tmp_path):
    obj, *_ = _embedding_problem(4)
    a = _run(obj, 0.5, seed=2, budget=160)

    def make():
        b = make_optimizer("elite", obj.space, batch_size=20, seed=99, params={"starts": None, "direct_frac": 0.5,
                                                                                "uniform_pick": "random"})
        b.bind(obj)
        return b

    assert_resumes_identically(a, make, obj, tmp_path)


def test_directional_moves_help_in_noise_mode_too():
    """A noisy version of the problem (what a rig sees): with the moves fitted to the codes' means, the
    truly best elite code is better than without them (median over seeds)."""
    gains = []
    for seed in range(3):
        runs: list[float] = []
        for frac in (0.5, 0.0):
            obj, _, _, drive = _embedding_problem(20 + seed, d=16, n=64)
            noise = np.random.default_rng(seed)
            noisy = FunctionObjective(lambda I, f=obj: f(I) + noise.normal(0.0, 0.3, len(I)), obj.space,
                                      name="noisy", cache=False)
            noisy.generator = obj.generator
            opt = make_optimizer("elite", obj.space, batch_size=20, seed=seed,
                                 params={"starts": None, "noise": "on", "direct_frac": frac})
            opt.bind(noisy)
            assert (opt._direct is not None) == (frac > 0)
            for _ in range(15):
                I = opt.ask()
                opt.tell(I, noisy(I))
            runs.append(drive(opt.elite_I[:1])[0])
        gains.append(runs[0] - runs[1])
    assert np.median(gains) > 0, gains
