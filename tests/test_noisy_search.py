"""Noisy search (issue 12 item 4): shrunk means against the winner's curse, the additive model,
and elite's noise mode (re-asks, pooled means, Thompson proposals, resume)."""
from __future__ import annotations

import numpy as np
import pytest

from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.optimizers.additive import AdditiveModel
from mango.shrinkage import noise_variance, shrunk_means
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_resumes_identically


def test_shrinkage_estimates_the_prior_weight_and_beats_the_raw_mean():
    rng = np.random.default_rng(0)
    m = 4000
    true = rng.normal(0.0, 1.0, m)                    # spread of true means: variance 1
    n = rng.integers(1, 6, m)                         # 1..5 values per code, noise variance 4
    vals = [t + rng.normal(0.0, 2.0, k) for t, k in zip(true, n)]
    s = np.array([v.sum() for v in vals])
    ss = np.array([(v ** 2).sum() for v in vals])
    assert noise_variance(s, ss, n) == pytest.approx(4.0, rel=0.05)
    post, n0 = shrunk_means(s, ss, n)
    assert n0 == pytest.approx(4.0, rel=0.15)         # noise variance / spread of true means
    raw = s / n
    # the code picked by the shrunk mean is truly better than the one picked by the raw mean
    assert true[np.argmax(post)] > true[np.argmax(raw)]
    assert np.mean((post - true) ** 2) < 0.7 * np.mean((raw - true) ** 2)
    # a prior mean per code (a model's prediction) replaces the grand mean as the centre
    centred, _ = shrunk_means(s, ss, n, prior=true)
    assert np.mean((centred - true) ** 2) < np.mean((post - true) ** 2)


def test_few_repeated_codes_use_the_default_weight():
    post, n0 = shrunk_means([10.0, 0.0], [100.0, 0.0], [1, 1])
    assert n0 == 1.0 and post.tolist() == [7.5, 2.5]   # (10 + 5) / 2, (0 + 5) / 2


def test_additive_model_recovers_an_additive_function_from_noisy_means():
    rng = np.random.default_rng(1)
    d, n = 8, 6
    w_true = rng.normal(0.0, 1.0, (d, n))
    I = rng.integers(0, n, (400, d))
    f = w_true[np.arange(d), I].sum(1)
    y = f + rng.normal(0.0, 1.0, len(I))
    model = AdditiveModel(d, n)
    model.add_codes(I[:150])
    model.add_codes(I[150:])                          # kernel grows incrementally
    K = (I[:, None, :] == I[None, :, :]).sum(-1)
    np.testing.assert_array_equal(model.K, K)
    model.fit(y, np.ones(len(I)), noise_var=1.0)
    assert np.corrcoef(model.predict(I), f)[0, 1] > 0.9
    best = w_true.max(1).sum()
    got = w_true[np.arange(d), model.w.argmax(1)].sum()
    assert got > best - 0.1 * (best - f.mean())     # the model's argmax is within 10 % of the optimum
    W = model.sample_weights(np.random.default_rng(0), 3)
    assert W.shape == (3, d, n) and not np.allclose(W[0], W[1])   # posterior samples differ


def _noisy_objective(seed: int, sd: float = 2.0) -> tuple[FunctionObjective, np.ndarray]:
    """A noisy near-additive problem on 10 positions x 8 values: the truth and its noisy black box."""
    rng = np.random.default_rng(100 + seed)
    w = rng.normal(0.0, 1.0, (10, 8))
    noise = np.random.default_rng(200 + seed)
    truth = lambda I: w[np.arange(10), np.asarray(I)].sum(1)  # noqa: E731
    fn = lambda I: truth(I) + noise.normal(0.0, sd, len(I))   # noqa: E731
    obj = FunctionObjective(fn, CodebookSpace(d=10, n=8), name="noisy", cache=False)
    return obj, w


def _run(obj, mode: str, seed: int, budget: int = 400):
    opt = make_optimizer("elite", obj.space, batch_size=20, seed=seed, params={"noise": mode, "starts": None})
    for _ in range(budget // 20):
        I = opt.ask()
        opt.tell(I, obj(I))
    return opt


def test_noise_mode_reasks_elite_codes_and_pools_their_values():
    obj, _ = _noisy_objective(0)
    opt = _run(obj, "on", 0, budget=300)
    counts = np.asarray(opt._cnt)
    assert counts.max() >= 4                           # elite codes were measured again
    assert counts.max() <= opt.max_reeval
    off = _run(_noisy_objective(0)[0], "off", 0, budget=300)
    assert np.asarray(off._cnt).max() == 1             # without it, no code is asked twice


def test_noise_mode_finds_truly_better_codes_than_plain_elite():
    """Same noisy problems, same seeds: the truth of the best-ranked elite code, noise mode vs off."""
    gains = []
    for seed in range(4):
        on = _run(_noisy_objective(seed)[0], "on", seed)
        off = _run(_noisy_objective(seed)[0], "off", seed)
        w = _noisy_objective(seed)[1]
        truth = lambda I: w[np.arange(10), np.asarray(I)].sum(-1)  # noqa: E731
        gains.append(truth(on.elite_I[0]) - truth(off.elite_I[0]))
    assert np.median(gains) > 0, gains


def test_noise_mode_resumes_identically(tmp_path):
    obj, _ = _noisy_objective(1)
    a = make_optimizer("elite", obj.space, batch_size=20, seed=3, params={"noise": "on", "starts": None})
    for _ in range(6):
        I = a.ask()
        a.tell(I, obj(I))
    assert_resumes_identically(
        a, lambda: make_optimizer("elite", obj.space, batch_size=20, seed=99, params={"noise": "on", "starts": None}),
        obj, tmp_path)


def test_noise_auto_follows_the_objective():
    quiet = FunctionObjective(lambda I: np.zeros(len(I)), CodebookSpace(d=4, n=3), name="q")
    opt = make_optimizer("elite", quiet.space, batch_size=5, seed=0, params={"starts": None})
    opt.bind(quiet)
    assert opt.noisy is False

    class Loud:
        noisy = True
        space = quiet.space

    opt.bind(Loud())
    assert opt.noisy is True
