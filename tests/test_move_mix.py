"""The adaptive move mix (mango.optimizers.bandit.MoveMix) and elite's ``adapt_moves`` option."""
import numpy as np
import pytest

from mango.errors import ConfigError
from mango.optimizers import make_optimizer
from mango.optimizers.bandit import MoveMix
from mango.spaces import CodebookSpace

from _optimizer_helpers import assert_resumes_identically, point_friendly, run_elite, silent_and_firing


def test_equal_rates_keep_the_base_shares():
    mix = MoveMix(np.array([2.0, 1.0, 1.0]))
    np.testing.assert_allclose(mix.shares(), [0.5, 0.25, 0.25])
    for kind in range(3):
        for _ in range(10):
            mix.record(kind, 0.5)
    np.testing.assert_allclose(mix.shares(), [0.5, 0.25, 0.25])


def test_a_kind_that_succeeds_more_gains_share_down_to_the_floor_of_the_others():
    mix = MoveMix(np.array([0.5, 0.25, 0.25]), floor=0.25)
    for _ in range(200):
        mix.record(0, 0.0)
        mix.record(1, 1.0)
        mix.record(2, 0.0)
    p = mix.shares()
    assert p[1] > 0.25 and p.sum() == pytest.approx(1.0)
    # the two failing kinds keep a quarter of their base share (then renormalised)
    assert p[0] == pytest.approx(2 * p[2]) and p[0] >= 0.25 * 0.5 / 1.5
    mix.step()
    assert mix.trials[0] == pytest.approx(180.0)          # decay 0.9 per step


def test_few_trials_are_shrunk_toward_the_pooled_rate():
    mix = MoveMix(np.array([1.0, 1.0]), prior=5.0)
    for _ in range(50):
        mix.record(0, 0.2)
    mix.record(1, 1.0)                                     # one lucky trial is not a rate of 1
    assert mix.shares()[1] < 0.75


@pytest.mark.parametrize("kw, msg", [({"base": [0.0, 0.0]}, "move shares must be >= 0 and not all 0"),
                                     ({"base": [1.0], "floor": 2.0}, r"floor must be in \[0, 1\]")])
def test_bad_mix_parameters_name_the_value(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        MoveMix(np.asarray(kw.pop("base")), **kw)


def _run(obj, adapt, when="always"):
    return run_elite(obj, {"starts": None, "uniform_codes": 0, "adapt_moves": adapt, "adapt_when": when},
                     seed=0, budget=300)


@pytest.mark.parametrize("adapt", ["parent", "best"])
def test_the_mix_moves_toward_the_kind_that_makes_progress(adapt):
    opt = _run(point_friendly(), adapt)
    base, p = opt._mix.base, opt._mix.shares()
    assert p[4] > base[4] + 0.1, (base, p)                  # point moves: 0.5 of local moves at the start
    assert p[1] < base[1] and p[3] < base[3]                # recolour and shift below their base shares


def test_by_default_the_mix_is_used_only_while_the_unit_is_silent():
    """``adapt_when="silent"``: on a unit that never fires (every score is a tie term below one spike)
    the adapted shares are used; on the same problem as whole spikes (it fires) the fixed ones are,
    while the mix still learns."""
    silent, firing = silent_and_firing(point_friendly())
    opt = _run(silent, "best", when="silent")
    assert opt._kinds != (0.25, 0.15, 0.1) and opt._mix.shares()[4] > opt._mix.base[4] + 0.1
    opt = _run(firing, "best", when="silent")
    assert opt._kinds == (0.25, 0.15, 0.1) and opt._mix.shares()[4] > opt._mix.base[4]
    assert _run(firing, "best", when="always")._kinds != (0.25, 0.15, 0.1)


def test_off_keeps_the_fixed_mix():
    opt = _run(point_friendly(), "off")
    assert opt._mix is None and opt._kinds == (0.25, 0.15, 0.1)


def test_adapt_moves_and_adapt_when_name_their_choices():
    with pytest.raises(ConfigError, match="adapt_moves must be one of 'off', 'parent', 'best', got 'yes'"):
        make_optimizer("elite", CodebookSpace(d=4, n=4), params={"adapt_moves": "yes"})
    with pytest.raises(ConfigError, match="adapt_when must be one of 'silent', 'always', got 'never'"):
        make_optimizer("elite", CodebookSpace(d=4, n=4), params={"adapt_when": "never"})


def test_state_dict_round_trip_keeps_the_mix(tmp_path):
    obj = point_friendly()
    params = {"starts": None, "uniform_codes": 0, "adapt_moves": "best", "adapt_when": "always"}

    def make(seed):
        o = make_optimizer("elite", obj.space, batch_size=20, seed=seed, params=params)
        o.bind(obj)
        return o

    a = make(3)
    for _ in range(4):
        I = a.ask()
        a.tell(I, obj(I))
    b = assert_resumes_identically(a, lambda: make(99), obj, tmp_path)
    np.testing.assert_allclose(a._mix.state(), b._mix.state())
