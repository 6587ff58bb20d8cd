"""elite's shift move: a child is its parent's code grid translated by up to two positions (the vacated
rows/columns repeat the edge), which carries a pattern that drives a unit at one place to another."""
import numpy as np
import pytest

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.spaces import CodebookSpace

from _optimizer_helpers import run_elite

H = W = 6
SPACE = CodebookSpace(d=H * W, n=64, shape=(H, W))


def _shifted(code: np.ndarray, dy: int, dx: int) -> np.ndarray:
    g = code.reshape(H, W)
    return g[np.clip(np.arange(H) - dy, 0, H - 1)][:, np.clip(np.arange(W) - dx, 0, W - 1)].reshape(-1)


def test_every_shift_child_is_its_parent_translated_with_the_edge_repeated():
    start = np.random.default_rng(0).integers(0, 64, size=H * W)
    obj = FunctionObjective(lambda I: I.sum(1).astype(float), SPACE, name="sum")
    opt = make_optimizer("elite", SPACE, batch_size=12, seed=3,
                         params={"shift": 1.0, "recolor": 0.0, "block": 0.0, "direct_frac": 0.0,
                                 "uniform_codes": 0, "elite": 1, "starts": [start.tolist()]})
    first = opt.ask()
    np.testing.assert_array_equal(first[0], start)
    opt.tell(first, obj(first))
    parent = first[int(np.argmax(obj(first)))]
    shifts = {_shifted(parent, dy, dx).tobytes(): (dy, dx)
              for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx}
    children = opt.ask()
    assert len(children) == 12
    for child in children:
        assert child.tobytes() in shifts, f"child {child.tolist()} is no shift of {parent.tolist()}"
    assert len({shifts[c.tobytes()] for c in children}) == 12      # distinct shifts (never a code twice)


def _corner_problem(seed: int):
    """Score: over the placements of a 3 x 3 pattern of distinct values, the most matches, discounted by
    10 % per row/column away from the top-left corner (a unit that likes the pattern, most at the corner);
    the one start code holds it two positions down and right (5.4 of the 9 the corner gives)."""
    rng = np.random.default_rng(seed)
    pattern = rng.choice(64, size=(3, 3), replace=False)
    start = rng.integers(0, 64, size=(H, W))
    start[2:5, 2:5] = pattern

    def f(I):
        g = I.reshape(-1, H, W)
        return np.max([(g[:, y:y + 3, x:x + 3] == pattern).sum((1, 2)) * (1 - 0.1 * (y + x))
                       for y in range(H - 2) for x in range(W - 2)], axis=0)

    return FunctionObjective(f, SPACE, name="corner"), start.reshape(-1).tolist()


def test_shift_moves_carry_a_pattern_to_where_it_scores():
    got = {}
    for shift in (0.0, 0.5):
        best = []
        for seed in range(3):
            obj, start = _corner_problem(seed)
            opt = run_elite(obj, {"shift": shift, "uniform_codes": 0, "direct_frac": 0.0, "starts": [start]},
                            seed=seed, budget=200, bind=False)
            best.append(opt.recommend()[1])
        got[shift] = float(np.median(best))
    assert got[0.5] == 9.0          # the whole pattern at the corner
    assert got[0.0] < 6.0          # the start (5.4): point moves cannot rebuild the pattern elsewhere


@pytest.mark.parametrize("params, msg", [({"shift": -0.1}, "shift must be >= 0"),
                                         ({"shift": 0.7}, r"recolor \+ block \+ shift <= 1, got 0.7")])
def test_bad_shift_names_the_value(params, msg):
    with pytest.raises(ConfigError, match=msg):
        make_optimizer("elite", SPACE, params=params)
