"""Kernel screening (issue 12 item 2): elite ranks a pool of candidate children with an RBF kernel
model of the score over the codes' codebook vectors and asks the most promising ones."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.optimizers.kernel import KernelScreen

from _optimizer_helpers import assert_model_needs_code_vectors, assert_resumes_identically, run_elite
from test_directional import _embedding_problem


def _bump_problem(seed: int, d: int = 16, n: int = 64, D: int = 6):
    """A score that peaks at one code and falls with the squared distance of the codes' vectors to it
    (a neuron with one preferred image): not linear in the vectors, smooth in them."""
    obj, V, _, _ = _embedding_problem(seed, d=d, n=n, D=D)
    target = np.random.default_rng(seed + 100).integers(0, n, d)
    dist = lambda I: ((V[np.asarray(I)] - V[target]) ** 2).sum((1, 2))     # noqa: E731
    fn = lambda I: np.exp(-dist(I) / (4.0 * d))                            # noqa: E731
    bump = FunctionObjective(fn, obj.space, name="embedding-bump")
    bump.generator = obj.generator
    return bump, V, target


def test_kernel_model_ranks_neighbours_of_the_fitted_codes():
    obj, V, target = _bump_problem(0)
    rng = np.random.default_rng(1)
    # codes scattered around the peak (1-6 positions off), as a local search evaluates them
    def around(center, k):
        C = np.repeat(center[None], k, 0)
        for c in C:
            pos = rng.choice(obj.space.d, int(rng.integers(1, 7)), replace=False)
            c[pos] = rng.integers(0, obj.space.n, len(pos))
        return C
    train, test = around(target, 300), around(target, 100)
    model = KernelScreen(V, obj.space.d, window=250)
    assert model.fit(train, obj(train))
    assert model._X.shape[0] == 250                                     # the window keeps the last 250
    mean, sd = model.predict(test, std=True)
    assert mean.shape == sd.shape == (100,)
    assert spearmanr(mean, obj(test)).correlation > 0.6
    _, sd_train = model.predict(train[-5:], std=True)
    assert (sd_train < sd.mean()).all()                                 # fitted codes are the least uncertain
    assert not model.fit(train, np.ones(len(train)))                    # flat scores: no model
    with pytest.raises(RuntimeError, match="before"):
        model.predict(test)


def _run(obj, pool: int, seed: int, budget: int = 400):
    return run_elite(obj, {"starts": None, "kernel_pool": pool, "uniform_codes": 16}, seed, budget)


def test_screened_children_climb_higher_than_unscreened_ones():
    """Same problems and seeds, 400 queries: the best value with screening beats the best without
    (median over three problems: one unscreened run can get lucky)."""
    gains = []
    for seed in range(3):
        on = _run(_bump_problem(10 + seed)[0], 8, seed)
        off = _run(_bump_problem(10 + seed)[0], 0, seed)
        gains.append(on.best_y - off.best_y)
        assert on._kernel is not None and off._kernel is None
    assert np.median(gains) > 0, gains


def test_kernel_screen_needs_code_vectors_and_checks_its_parameters():
    obj, *_ = _bump_problem(3)
    assert_model_needs_code_vectors(obj, {"kernel_pool": 8}, "_kernel")
    for bad in ({"kernel_pool": -1}, {"kernel_window": 1}, {"kernel_width": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            make_optimizer("elite", obj.space, params=bad)


def test_kernel_screen_resumes_identically(tmp_path):
    obj, *_ = _bump_problem(4)
    a = _run(obj, 8, seed=2, budget=160)

    def make():
        b = make_optimizer("elite", obj.space, batch_size=20, seed=99,
                           params={"starts": None, "kernel_pool": 8, "uniform_codes": 16})
        b.bind(obj)
        return b

    assert_resumes_identically(a, make, obj, tmp_path)
