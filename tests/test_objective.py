import numpy as np
import pytest
import torch

from mango.errors import EvaluationError
from mango.objective import FunctionObjective, Objective
from mango.spaces import CodebookSpace, GridSpace


class Gen(torch.nn.Module):
    """Tiny generator: codes [k, 2, 2] -> images [k, 1, 2, 2] = code / n."""

    def __init__(self, n=8):
        super().__init__()
        self.space = CodebookSpace(d=4, n=n, shape=(2, 2))
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return z[:, None].float() / self.space.n


def mean_target(x):
    return x.flatten(1).mean(1)


def test_objective_values_batching_and_counts():
    g = Gen()
    obj = Objective(g, mean_target, batch_size=3)
    I = np.array([[0, 1, 2, 3], [7, 7, 7, 7], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]])
    y = obj(I)
    np.testing.assert_allclose(y, I.mean(1) / 8)
    assert g.calls == 2  # 5 queries in micro-batches of 3
    assert obj.n_queries == 5 and obj.n_evaluated == 5


def test_cache_skips_exact_repeats_but_counts_queries():
    g = Gen()
    obj = Objective(g, mean_target, batch_size=64)
    I = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    obj(I)
    assert obj.n_evaluated == 2
    y = obj(I[:1])
    assert obj.n_evaluated == 2 and obj.n_queries == 4
    assert y[0] == pytest.approx(10 / 32)


def test_noisy_target_is_not_cached():
    class Noisy:
        noisy = True

        def __call__(self, x):
            return torch.rand(x.shape[0])

    obj = Objective(Gen(), Noisy())
    obj(np.zeros((3, 4), dtype=int))
    assert obj.n_evaluated == 3 and not obj.cache_enabled


def test_nan_error_names_query_and_keeps_earlier_records():
    def bad(x):
        v = x.flatten(1).mean(1)
        v[v > 0.5] = float("nan")
        return v

    obj = Objective(Gen(), bad)
    obj(np.array([[1, 1, 1, 1]]))
    with pytest.raises(EvaluationError, match="query 1 of the batch"):
        obj(np.array([[0, 0, 0, 0], [7, 7, 7, 7]]))
    assert obj.n_queries == 1 and obj.n_evaluated == 1 and len(obj._cache) == 1


def test_inf_and_wrong_shape_raise():
    obj = Objective(Gen(), lambda x: torch.full((x.shape[0],), float("inf")))
    with pytest.raises(EvaluationError, match="inf"):
        obj(np.zeros((1, 4), dtype=int))
    obj2 = Objective(Gen(), lambda x: torch.zeros(x.shape[0], 3))
    with pytest.raises(EvaluationError, match=r"select="):
        obj2(np.zeros((2, 4), dtype=int))


def test_select_channels():
    obj = Objective(Gen(), lambda x: torch.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3)), torch.ones(len(x))], 1),
                    select=[0, 2])
    y = obj(np.array([[8 - 1] * 4]))
    assert y[0] == pytest.approx((4 * 7 / 8 + 1) / 2)


def test_function_objective_and_grid():
    sp = GridSpace(d=3, n=4)
    obj = FunctionObjective(lambda I: sp.values[I].sum(1), sp, known_max=3 * sp.values[-1])
    assert obj(np.array([[3, 3, 3]]))[0] == pytest.approx(obj.known_max)
