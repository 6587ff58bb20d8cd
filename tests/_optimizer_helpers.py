"""Shared checks for ask/tell optimizers in the tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from mango.journal import load_state, save_state
from mango.objective import FunctionObjective


def assert_resumes_identically(a: Any, make: Callable[[], Any], objective: Callable[[np.ndarray], np.ndarray],
                               folder: Path, steps: int = 3) -> Any:
    """Save ``a``'s state to an ``.npz`` in ``folder``, load it into ``make()`` (a fresh optimizer built
    with another seed), then require both to ask the same codes for ``steps`` batches while told the
    same values (a noisy ``objective`` is called once per batch). Returns the resumed optimizer."""
    save_state(folder / "state.npz", a.state_dict())
    b = make()
    b.load_state_dict(load_state(folder / "state.npz"))
    for _ in range(steps):
        Ia, Ib = a.ask(), b.ask()
        np.testing.assert_array_equal(Ia, Ib)
        y = objective(Ia)
        a.tell(Ia, y)
        b.tell(Ib, y)
    return b


class SpikeCountObjective(FunctionObjective):
    """A function objective whose values are ``spikes + tie`` (``tie`` in [0, 1)) and that reports the
    spike count, as a spiking target's graded readout reports the plain rate."""

    def reported(self, values: Any) -> np.ndarray:
        return np.floor(np.asarray(values, dtype=np.float64))


def point_friendly() -> FunctionObjective:
    """Each of 36 positions (a 6 x 6 grid, 16 values) that matches a target adds 1: single-position
    (point) moves climb it, while recolour, block and shift moves, which change many positions at once,
    mostly break matches."""
    from mango.spaces import CodebookSpace

    target = (np.arange(36) * 5) % 16
    return FunctionObjective(lambda I: (np.asarray(I) == target).sum(1).astype(float),
                             CodebookSpace(d=36, n=16, shape=(6, 6)), name="point-friendly")


def silent_and_firing(base: FunctionObjective) -> tuple[SpikeCountObjective, SpikeCountObjective]:
    """``base`` as a unit that never fires (every value 0.02 x base, a tie term below one spike) and as
    one that does (its values as whole spikes)."""
    silent = SpikeCountObjective(lambda I: 0.02 * base.fn(I), base.space, name="silent")
    firing = SpikeCountObjective(base.fn, base.space, name="firing")
    return silent, firing


def run_elite(objective: Any, params: dict[str, Any], seed: int, budget: int = 400, bind: bool = True,
              batch_size: int = 20) -> Any:
    """``elite`` with ``params`` run for ``budget`` queries on ``objective`` by plain ask/tell (bound to
    it first when ``bind``); returns the optimizer."""
    from mango.optimizers import make_optimizer

    opt = make_optimizer("elite", objective.space, batch_size=batch_size, seed=seed, params=params)
    if bind:
        opt.bind(objective)
    for _ in range(budget // batch_size):
        I = opt.ask()
        opt.tell(I, objective(I))
    return opt


def assert_model_needs_code_vectors(objective: Any, params: dict[str, Any], attr: str) -> None:
    """``elite`` with ``params`` builds its model ``attr`` (e.g. ``"_direct"``) only when bound to an
    objective whose generator has ``code_vectors()``: not for a plain function of the same space, and
    then for ``objective`` (which has them)."""
    from mango.objective import FunctionObjective
    from mango.optimizers import make_optimizer

    plain = FunctionObjective(lambda I: np.zeros(len(I)), objective.space, name="plain")
    opt = make_optimizer("elite", objective.space, batch_size=10, seed=0, params={"starts": None, **params})
    opt.bind(plain)                     # no generator.code_vectors: no model
    assert getattr(opt, attr) is None
    opt.bind(objective)
    assert getattr(opt, attr) is not None
