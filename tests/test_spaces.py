import numpy as np
import pytest
import torch

from mango.errors import ConfigError
from mango.spaces import CodebookSpace, GridSpace, space_from_dict


def test_codebook_decode_layout_and_inverse():
    sp = CodebookSpace(d=64, n=512, shape=(8, 8))
    I = sp.sample(np.random.default_rng(0), 5)
    z = sp.decode(I)
    assert z.dtype == torch.int64 and z.shape == (5, 8, 8)
    assert torch.equal(z[:, 1, 2], torch.as_tensor(I[:, 10]))
    np.testing.assert_array_equal(sp.encode(z), I)


def test_grid_levels_are_equal_probability_normal_quantiles():
    sp = GridSpace(d=3, n=16)
    from statistics import NormalDist

    cdf = np.array([NormalDist().cdf(v) for v in sp.values])
    np.testing.assert_allclose(cdf, (np.arange(16) + 0.5) / 16, atol=1e-6)
    assert np.all(np.diff(sp.values) > 0)
    I = sp.sample(np.random.default_rng(1), 7)
    np.testing.assert_array_equal(sp.encode(sp.decode(I)), I)


def test_uniform_grid():
    sp = GridSpace(d=2, n=5, levels="uniform", low=0, high=1)
    np.testing.assert_allclose(sp.values, [0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(ConfigError, match="valid choices: normal, uniform"):
        GridSpace(d=2, n=5, levels="laplace")


@pytest.mark.parametrize("space", [CodebookSpace(d=64, n=512), GridSpace(d=5, n=8)])
def test_qtt_round_trip(space):
    q = space.qtt()
    I = space.sample(np.random.default_rng(2), 50)
    B = q.to_bits(I)
    assert B.shape == (50, space.d * q.q) and set(np.unique(B)) <= {0, 1}
    np.testing.assert_array_equal(q.from_bits(B), I)
    # most significant bit first
    np.testing.assert_array_equal(q.to_bits(np.full((1, space.d), space.n - 1))[0], 1)
    assert q.to_bits(np.full((1, space.d), space.n // 2))[0][0] == 1


def test_qtt_needs_power_of_two():
    with pytest.raises(ConfigError, match="power of two"):
        CodebookSpace(d=2, n=10).qtt()


def test_validate_errors_name_the_bad_value():
    sp = CodebookSpace(d=4, n=8)
    with pytest.raises(ConfigError, match=r"index 8 at query 1, position 2"):
        sp.validate([[0, 0, 0, 0], [1, 1, 8, 1]])
    with pytest.raises(ConfigError, match=r"shape \[k, 4\]"):
        sp.validate(np.zeros((2, 3), dtype=int))
    with pytest.raises(ConfigError, match="d must be >= 1"):
        CodebookSpace(d=0, n=4)


def test_space_dict_round_trip():
    for sp in (CodebookSpace(d=16, n=32, shape=(4, 4)), GridSpace(d=8, n=16, levels="uniform", low=0, high=1)):
        again = space_from_dict(sp.to_dict())
        assert again == sp and again.shape == sp.shape
