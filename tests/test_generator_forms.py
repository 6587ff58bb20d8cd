"""A user's own generator, in the forms users bring it: a plain function over closed-over weights, a module
in train mode with BatchNorm, one of another dtype, one that does not fit its space, one that returns NaN,
normalisation values that do not fit. Each case once gave stale or batch-dependent values, changed the
user's module, or failed with a raw torch error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mango
from generators.common import wrap
from mango.errors import ConfigError, EvaluationError
from mango.spaces import CodebookSpace, GridSpace


def _cnn() -> nn.Module:
    return mango.registry.create("target", "cnn-digits").model


def _fn_generator(W: torch.Tensor):
    return wrap(lambda z: torch.sigmoid(z @ W).reshape(-1, 1, 16, 16), GridSpace(d=8, n=16), name="fn-gan")


def test_a_wrapped_function_with_other_weights_is_another_run(tmp_path):
    torch.manual_seed(0)
    W1, W2 = torch.randn(8, 256), torch.randn(8, 256)
    kw = dict(generator=None, optimizer="random", budget=20, seed=0, run_dir=tmp_path / "run")
    a = mango.maximize(_cnn(), "output:3", **{**kw, "generator": _fn_generator(W1)})
    with pytest.raises(ConfigError, match="structure"):
        mango.maximize(_cnn(), "output:3", **{**kw, "generator": _fn_generator(W2)})
    b = mango.maximize(_cnn(), "output:3", **{**kw, "generator": _fn_generator(W1.clone())})   # same values: resumes
    assert b.best_value == a.best_value


class _BNGen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc, self.bn = nn.Linear(8, 256), nn.BatchNorm1d(256)

    def forward(self, z):
        return torch.sigmoid(self.bn(self.fc(z))).reshape(-1, 1, 16, 16)


def test_a_generator_in_train_mode_is_run_in_eval_mode_and_left_as_it_was():
    module = _BNGen().train()
    before = module.bn.running_mean.clone()
    gen = wrap(module, GridSpace(d=8, n=16))
    res = mango.maximize(_cnn(), "output:3", generator=gen, optimizer="random", budget=30, seed=0)
    assert module.training and module.bn.training and torch.equal(module.bn.running_mean, before)
    with torch.no_grad():
        module.eval()
        z = gen.space.decode(np.asarray([res.best_code]))
        want = float(_cnn()(module(z))[0, 3])
    assert res.best_value == pytest.approx(want, abs=1e-5)      # its value alone, in eval mode: no batch in it
    for opt in ("gradient", "elite"):
        module.train()
        mango.maximize(_cnn(), "output:3", generator=gen, optimizer=opt, budget=20, seed=0)
        assert module.training and torch.equal(module.bn.running_mean, before)


def test_a_float64_generator_takes_its_latents_in_its_dtype():
    torch.manual_seed(2)
    module = nn.Sequential(nn.Linear(8, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16))).double()
    res = mango.maximize(_cnn(), "output:3", generator=wrap(module, GridSpace(d=8, n=16)), optimizer="random",
                         budget=20, seed=0, transform=lambda x: x.float())
    assert np.isfinite(res.best_value)


def test_generators_that_do_not_fit_are_named():
    torch.manual_seed(3)
    small = wrap(nn.Sequential(nn.Linear(32, 256), nn.Unflatten(1, (1, 16, 16))), GridSpace(d=8, n=16), name="mini")
    with pytest.raises(ConfigError, match=r"generator mini.*grid space \(d=8.*fits the module"):
        mango.maximize(_cnn(), "output:3", generator=small, optimizer="random", budget=10)
    book = nn.Embedding(4, 16)
    vq = wrap(lambda z: torch.sigmoid(book(z)).reshape(-1, 1, 16, 16), CodebookSpace(d=16, n=8), name="vq")
    with pytest.raises(ConfigError, match=r"generator vq.*codebook space"):
        mango.maximize(_cnn(), "output:3", generator=vq, optimizer="random", budget=10)
    with pytest.raises(ConfigError, match=r"returned a ndarray.*one torch tensor"):
        mango.maximize(_cnn(), "output:3", optimizer="random", budget=10,
                       generator=wrap(lambda z: np.zeros((len(z), 1, 16, 16)), GridSpace(d=8, n=16)))
    with pytest.raises(ConfigError, match=r"no LatentSpace 'space' attribute.*mango.generators.wrap"):
        mango.maximize(_cnn(), "output:3", generator=_BNGen(), optimizer="random", budget=10)


def test_nan_images_are_named_and_the_journal_keeps_what_was_done(tmp_path):
    torch.manual_seed(4)
    W = torch.randn(8, 256)

    def gen_fn(z):
        x = torch.sigmoid(z @ W)
        x[z[:, 0] > 1.5] = float("nan")             # the codes whose first latent is high give NaN images
        return x.reshape(-1, 1, 16, 16)

    gen = wrap(gen_fn, GridSpace(d=8, n=16))
    with pytest.raises(EvaluationError, match=r"returned NaN or infinite pixels for code \[1[45]"):
        mango.maximize(_cnn(), "output:3", generator=gen, optimizer="random", budget=200, seed=0,
                       run_dir=tmp_path / "run", batch_size=10)
    lines = (tmp_path / "run" / "journal.jsonl").read_text().splitlines()
    assert len(lines) >= 1          # the batches before the NaN one are kept


def test_normalisation_values_that_do_not_fit_are_refused_before_the_search():
    module = nn.Sequential(nn.Linear(8, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))
    with pytest.raises(ConfigError, match="std must be finite and > 0"):
        wrap(module, GridSpace(d=8, n=16), mean=(0.5,), std=(0.0,))
    gen = wrap(module, GridSpace(d=8, n=16), mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match=r"mean has 3 channel value\(s\) but .* have 1 channel"):
        mango.maximize(_cnn(), "output:3", generator=gen, optimizer="random", budget=200)


def test_integer_images_are_taken_and_an_eval_module_is_not_toggled():
    calls = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 256)

        def train(self, mode: bool = True):
            calls.append(mode)
            return super().train(mode)

        def forward(self, z):
            return (torch.sigmoid(self.fc(z)) * 255).to(torch.uint8).reshape(-1, 1, 16, 16)

    module = Counting().eval()
    calls.clear()
    gen = wrap(module, GridSpace(d=8, n=16), value_range=(0, 255))
    res = mango.maximize(_cnn(), "output:3", generator=gen, optimizer="random", budget=20, seed=0,
                         transform=lambda x: x.float() / 255)
    assert np.isfinite(res.best_value) and calls == []       # in eval already: no train() call per batch


def test_running_statistics_are_in_the_weights_mark_whatever_the_mode():
    """The search scores with BatchNorm's running statistics (eval mode) also for a module left in train mode,
    so two generators that differ only there must not share a run folder."""
    from mango.fingerprint import weights_fingerprint

    a, b = _BNGen().train(), _BNGen().train()
    assert weights_fingerprint(wrap(a, GridSpace(d=8, n=16))) == weights_fingerprint(wrap(b, GridSpace(d=8, n=16)))
    with torch.no_grad():
        b.bn.running_mean.add_(5.0)
    assert weights_fingerprint(wrap(a, GridSpace(d=8, n=16))) != weights_fingerprint(wrap(b, GridSpace(d=8, n=16)))
