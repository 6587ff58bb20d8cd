"""elite's local point moves (``window``): the positions a point move changes lie in one 3 x 3 window of
the code grid, so a child tries a coherent local pattern (what a convolutional unit's receptive field
sees) instead of changes scattered over the grid."""
import numpy as np
import pytest

from mango.errors import ConfigError
from mango.objective import FunctionObjective
from mango.optimizers import make_optimizer
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_resumes_identically, run_elite

H = W = 8
SPACE = CodebookSpace(d=H * W, n=64, shape=(H, W))
POINT_ONLY = {"recolor": 0.0, "block": 0.0, "shift": 0.0, "direct_frac": 0.0, "uniform_codes": 0, "elite": 1,
              "adapt_window": False,
              "max_mutations": 4}


def _children_spans(window: float) -> list[int]:
    """Chebyshev extent (max row/column distance) of the positions each child of one parent changed."""
    start = np.random.default_rng(0).integers(0, 64, size=H * W)
    obj = FunctionObjective(lambda I: I.sum(1).astype(float), SPACE, name="sum")
    opt = make_optimizer("elite", SPACE, batch_size=50, seed=1,
                         params={**POINT_ONLY, "window": window, "starts": [start.tolist()]})
    first = opt.ask()
    opt.tell(first, obj(first))
    parent = first[int(np.argmax(obj(first)))]             # the start, or a random code of the first batch
    spans = []
    for _ in range(4):
        children = opt.ask()
        for child in children:
            y, x = np.divmod(np.nonzero(child != parent)[0], W)
            spans.append(int(max(np.ptp(y), np.ptp(x))))
        opt.tell(children, np.zeros(len(children)))        # worse than the parent: it stays
    return spans


def test_window_moves_change_positions_within_one_3x3_window():
    local = _children_spans(1.0)
    assert max(local) <= 2                                 # every child: changes inside one 3 x 3 window
    scattered = _children_spans(0.0)
    assert max(scattered) > 2                              # without it, multi-position changes scatter


def _domino_problem(seed: int):
    """32 dominoes (horizontal pairs of positions 2j, 2j + 1 of a row): +1 for a domino whose two positions
    both hold the hidden pattern's values, -0.5 for one that matches at one position only. A domino
    matching nowhere is completed only by changing its two positions together (either alone scores less)."""
    pattern = np.random.default_rng(100 + seed).integers(0, 4, size=(H, W))
    space = CodebookSpace(d=H * W, n=4, shape=(H, W))

    def f(I):
        m = (I.reshape(-1, H, W) == pattern).reshape(-1, H, W // 2, 2)
        return m.all(-1).sum((1, 2)) - 0.5 * (m.sum(-1) == 1).sum((1, 2))

    return FunctionObjective(f, space, name="domino")


def test_window_moves_complete_pairs_that_only_score_together():
    got = {}
    for window in (0.0, 1.0):
        best = [run_elite(_domino_problem(seed), {**POINT_ONLY, "elite": 4, "window": window, "starts": None,
                                                  "explore": 1.0}, seed=seed, budget=1000, bind=False).recommend()[1]
                for seed in range(6)]
        got[window] = float(np.median(best))
    # measured: scattered 9.0, local 11.75 (of 32) at 1,000 queries
    assert got[1.0] >= got[0.0] + 1.5, got


def test_adaptive_window_shifts_to_the_kind_of_point_move_that_pays_and_resumes_identically(tmp_path):
    """Told that local children beat their parents and scattered ones fall below it, the adaptive window
    asks mostly local children (and the other way round); its statistics survive a save/load."""
    start = np.random.default_rng(0).integers(0, 64, size=H * W)
    obj = FunctionObjective(lambda I: np.zeros(len(I)), SPACE, name="flat")
    shares = {}
    for pays in (0, 1):                             # 0: local moves pay, 1: scattered ones do
        opt = make_optimizer("elite", SPACE, batch_size=40, seed=2,
                             params={**POINT_ONLY, "adapt_window": True, "starts": [start.tolist()]})
        first = opt.ask()
        opt.tell(first, np.where(np.arange(len(first)) == 0, 0.0, -10.0))      # the start is the parent
        for _ in range(6):
            kids = opt.ask()
            kinds = np.array([opt._move_kind[c.tobytes()] for c in kids])
            opt.tell(kids, np.where(kinds == pays, 1.0, -1.0))   # above / below every parent
        kids = opt.ask()
        shares[pays] = float(np.mean([opt._move_kind[c.tobytes()] == 0 for c in kids]))
        make = lambda: make_optimizer("elite", SPACE, batch_size=40, seed=99,                  # noqa: E731
                                      params={**POINT_ONLY, "adapt_window": True, "starts": [start.tolist()]})
        opt.tell(kids, np.zeros(len(kids)))
        assert_resumes_identically(opt, make, obj, tmp_path)
    assert shares[0] > 0.75 and shares[1] < 0.25, shares


@pytest.mark.parametrize("params, msg", [({"window": -0.1}, r"window must be in \[0, 1\], got -0.1"),
                                         ({"window": 1.5}, r"window must be in \[0, 1\], got 1.5"),
                                         ({"adapt_window": "false"}, "adapt_window must be bool, got 'false'")])
def test_bad_window_names_the_value(params, msg):
    with pytest.raises(ConfigError, match=msg):
        make_optimizer("elite", SPACE, params=params)
