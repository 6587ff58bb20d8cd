"""elite's ``block_textures``: block and recolour moves paint one of the best flat textures measured so
far (instead of another elite code's value or a random one), so a region the unit likes can be
composed into the best code in one move."""
from __future__ import annotations

import numpy as np
import pytest

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_resumes_identically

N = 64
SPACE = CodebookSpace(d=16, n=N, shape=(4, 4))
TABLE = np.random.default_rng(3).normal(0.0, 1.0, N)      # a texture-sum unit: entry v scores TABLE[v]


def _objective(noise: float = 0.0) -> FunctionObjective:
    rng = np.random.default_rng(11)

    def f(I: np.ndarray) -> np.ndarray:
        y = TABLE[np.asarray(I)].mean(1)
        return y + noise * rng.normal(size=len(y)) if noise else y
    return FunctionObjective(f, SPACE, name="textures")


def _elite(bt: float, seed: int = 0, **extra) -> object:
    # every local move a block or recolour move; every texture asked in the design
    params = {"starts": None, "uniform_codes": 16, "uniform_pick": "random", "recolor": 0.5, "block": 0.5,
              "shift": 0.0, "direct_frac": 0.0, "block_textures": bt, "texture_top": 4, **extra}
    return make_optimizer("elite", SPACE, batch_size=20, seed=seed, params=params)


def _painted(child: np.ndarray, parents: np.ndarray) -> set[int]:
    """The values that some parent's differing positions all hold in ``child`` (a block or recolour child)."""
    out = set()
    for p in parents:
        diff = child != p
        if diff.any() and len(set(child[diff].tolist())) == 1:
            out.add(int(child[diff][0]))
    return out


@pytest.mark.parametrize("bt, expect_all", [(1.0, True), (0.0, False)])
def test_block_and_recolour_moves_paint_the_best_textures(bt, expect_all):
    """With ``block_textures=1`` every child of the search paints one of the ``texture_top`` best textures
    told so far; with 0 (off; the default is 0.5) most paint other values (the check would fail if the option
    did nothing)."""
    obj, opt = _objective(), _elite(bt)
    I = opt.ask()                                       # the design: 16 textures, then 4 random codes
    opt.tell(I, obj(I))
    seen = [r for r in opt._seen_rows if r.min() == r.max()]
    assert len(seen) == 16
    vals = obj(np.stack(seen))
    top = {int(seen[i][0]) for i in np.argsort(-vals, kind="stable")[:4]}
    parents = opt.elite_I.copy()
    I = opt.ask()
    painted = [_painted(r, parents) for r in I]
    from_top = [bool(p & top) for p in painted if p]
    assert len(from_top) >= 10
    if expect_all:
        assert all(from_top)
    else:
        assert np.mean(from_top) < 0.5


def test_noisy_mode_ignores_it():
    """A rig run (noisy mode) asks the same codes with and without the option: one noisy value per
    texture is no ranking to paint from."""
    runs = []
    for bt in (0.0, 0.8):
        obj, opt = _objective(noise=0.3), _elite(bt, seed=2, noise="on")
        asked = []
        for _ in range(6):
            I = opt.ask()
            asked.append(I)
            opt.tell(I, obj(I))
        runs.append(np.concatenate(asked))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_resumes_identically(tmp_path):
    obj, opt = _objective(), _elite(0.6, seed=4)
    for _ in range(3):
        I = opt.ask()
        opt.tell(I, obj(I))
    assert_resumes_identically(opt, lambda: _elite(0.6, seed=99), obj, tmp_path)


@pytest.mark.parametrize("params, msg", [({"block_textures": 1.5}, "block_textures must be in [0, 1]"),
                                         ({"block_textures": -0.1}, "-0.1"),
                                         ({"texture_top": 0}, "texture_top >= 1, got 0.5, 0")])
def test_bad_values_are_named(params, msg):
    with pytest.raises(ConfigError, match=r"(?s).*" + msg.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        make_optimizer("elite", SPACE, batch_size=10, seed=0, params=params)
