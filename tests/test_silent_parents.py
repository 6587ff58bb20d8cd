"""With ``silent_parents`` (default 8, from ``silent_after=300`` codes on), elite draws its parents (almost) only
from the best code while the unit is silent (issue 12 item 2): a (1 + k) climb on the sub-threshold tie term,
the rank-weighted elite before that and after the first spike."""
from __future__ import annotations

import numpy as np
import pytest

from mango.errors import ConfigError
from mango.optimizers import make_optimizer
from mango.spaces import CodebookSpace

from _optimizer_helpers import point_friendly, run_elite, silent_and_firing


def _best_parent_share(objective, budget: int = 200, **params) -> float:
    """Run elite ``budget`` queries, ask once more (which sets this batch's parent weights), then the share
    of 2,000 parent draws that take the best code."""
    opt = run_elite(objective, {"starts": None, "uniform_codes": 0, **params}, seed=0, budget=budget)
    opt.ask()
    assert len(opt.elite_y) == opt.n_elite
    return float(np.mean([opt._pick_parent() == 0 for _ in range(2000)]))


def test_parents_are_the_best_code_while_silent_and_rank_weighted_after_the_first_spike():
    silent, firing = silent_and_firing(point_friendly())     # ties below one spike / whole spikes
    one_over_rank = 1.0 / (1.0 / np.arange(1, 9)).sum()                                   # 0.37 for 8 parents
    assert _best_parent_share(silent, silent_after=0) > 0.98
    assert _best_parent_share(silent, silent_parents=1, silent_after=0) == pytest.approx(one_over_rank, abs=0.05)
    assert _best_parent_share(firing, silent_after=0) == pytest.approx(one_over_rank, abs=0.05)


def test_by_default_the_greedy_parents_start_after_300_codes():
    """The defaults (8, 300): a silent run is still rank-weighted after 200 queries and greedy after 400."""
    silent, _ = silent_and_firing(point_friendly())
    one_over_rank = 1.0 / (1.0 / np.arange(1, 9)).sum()
    assert _best_parent_share(silent) == pytest.approx(one_over_rank, abs=0.05)
    assert _best_parent_share(silent, budget=400) > 0.98


def test_silent_parents_must_be_positive_and_is_named():
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match=f"silent_parents must be > 0, got {bad!r}"):
            make_optimizer("elite", CodebookSpace(d=4, n=4), params={"silent_parents": bad})
    with pytest.raises(ConfigError, match="silent_after must be >= 0, got -1"):
        make_optimizer("elite", CodebookSpace(d=4, n=4), params={"silent_after": -1})
