"""One loop kernel, one budget owner: every run (plain, noisy rig, gradient AM) goes through
``mango.loop.run_loop``; optimizers report their own queries through ``take_spent``; the run folder
written from Python is the command line's; resume puts values back through ``Objective.restore``."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mango.loop
from mango import registry
from mango import problems
from mango.errors import MangoError
from mango.loop import maximize, run_loop
from mango.objective import BaseObjective, Objective
from mango.optimizers import make_optimizer
from mango.optimizers.base import Optimizer
from mango.optimizers.gradient import GradientAM
from mango.rig.closedloop import closed_loop, stimulus_images
from mango.rig.model import LocalRig, PoissonNeurons
from mango.spaces import GridSpace

ROOT = Path(__file__).resolve().parents[1]


class BlockGen(nn.Module):
    """A 4 x 4 grid of gray levels in [0, 1], shown as a [k, 1, 16, 16] image (differentiable)."""

    differentiable = True

    def __init__(self) -> None:
        super().__init__()
        self.space = GridSpace(d=16, n=8, shape=(1, 4, 4), levels="uniform", low=0.0, high=1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(-1, 1, 4, 4).float().repeat_interleave(4, 2).repeat_interleave(4, 3)


class Unit(nn.Module):
    """A fixed linear filter + softplus over the image; counts the images it sees with grad on / off."""

    differentiable = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed)))
        self.grad_images = 0
        self.plain_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.grad_images += x.shape[0]
        else:
            self.plain_images += x.shape[0]
        return nn.functional.softplus((x * self.w).flatten(1).sum(1))


class SpyOnAsk:
    """Wraps an optimizer instance's ask/tell/take_spent and records which function called them."""

    def __init__(self, opt: Optimizer) -> None:
        self.callers: set[str] = set()
        for name in ("ask", "tell", "take_spent"):
            method = getattr(opt, name)
            setattr(opt, name, self._wrap(method))

    def _wrap(self, method):
        def spy(*args, **kwargs):
            code = sys._getframe(1).f_code
            self.callers.add(f"{Path(code.co_filename).name}:{code.co_name}")
            return method(*args, **kwargs)
        return spy


def _kernel_entries(monkeypatch) -> list[str]:
    """Patch the kernel (where maximize and closed_loop look it up) to record each entry."""
    entries: list[str] = []
    real = mango.loop.run_loop

    def spy(optimizer, budget, policy, **kw):
        entries.append(type(policy).__name__)
        return real(optimizer, budget, policy, **kw)

    monkeypatch.setattr(mango.loop, "run_loop", spy)
    import mango.rig.closedloop as cl
    monkeypatch.setattr(cl, "run_loop", spy)
    return entries


def test_plain_rig_and_gradient_runs_all_go_through_the_one_kernel(monkeypatch, tmp_path):
    entries = _kernel_entries(monkeypatch)
    kernel = f"loop.py:{run_loop.__name__}"

    # a plain run
    obj = problems.separable(d=6, n=8, seed=0)
    opt = make_optimizer("ga", obj.space, batch_size=10, seed=0)
    spy = SpyOnAsk(opt)
    maximize(obj, opt, budget=50)
    assert spy.callers == {kernel}

    # gradient AM
    obj = Objective(BlockGen(), Unit())
    opt = GradientAM(obj.space, batch_size=3, seed=0, steps_per_ask=4)
    spy = SpyOnAsk(opt)
    maximize(obj, opt, budget=40)
    assert spy.callers == {kernel}

    # a noisy rig with repeats, re-tests, references and a confirmation block
    gen = BlockGen()
    calib = stimulus_images(gen, gen.space.sample(np.random.default_rng(1), 64))
    neurons = PoissonNeurons([Unit(3)], calib, peak_rate=40.0, seed=0)
    refs = stimulus_images(gen, gen.space.sample(np.random.default_rng(2), 1))
    opt = make_optimizer("ga", gen.space, batch_size=6, seed=0)
    spy = SpyOnAsk(opt)
    res = closed_loop(LocalRig(neurons), gen, opt, 120, repeats=2, retest_every=2, confirm_top=2,
                      reference=refs, run_dir=tmp_path / "rig")
    assert spy.callers == {kernel}
    assert res.presentations == 120 and res.best_n >= 2 + 4
    assert entries == ["EvaluateOnce", "EvaluateOnce", "RigPolicy"]


def test_no_second_ask_tell_loop_in_the_sources():
    """Outside the optimizers (which may drive a wrapped library's own ask/tell), only the kernel
    asks, tells and takes spent queries."""
    offenders = []
    for folder in ("mango", "generators", "targets"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("mango/optimizers/"):
                continue
            tree = ast.parse(path.read_text())
            allowed = set()
            if rel == "mango/loop.py":
                kernel = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_loop")
                allowed = {id(n) for n in ast.walk(kernel)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("ask", "tell", "take_spent") and id(node) not in allowed):
                    offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


def test_gradient_queries_are_counted_once_by_the_loop(tmp_path):
    """n_queries == budget == forward passes + hard evaluations; the journal's external column holds
    exactly the gradient forward passes; no other counter exists."""
    unit = Unit()
    obj = Objective(BlockGen(), unit)
    opt = GradientAM(obj.space, batch_size=3, seed=0, steps_per_ask=5)
    res = maximize(obj, opt, budget=100, run_dir=tmp_path)
    rows = [json.loads(r) for r in (tmp_path / "journal.jsonl").read_text().splitlines()]
    external = sum(r["external"] for r in rows)
    evaluated = sum(len(r["y"]) for r in rows)
    assert unit.grad_images == opt.n_steps * 3 == external == res.n_external > 0
    assert res.n_queries == 100 == external + evaluated == external + len(res.values)
    assert res.query_index[-1] == 100
    assert obj.n_queries == evaluated  # the objective counts what it answered, nothing else
    assert not hasattr(BaseObjective, "count") and not hasattr(obj, "n_external")
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["n_queries"] == 100 and summary["n_external"] == external


class Greedy(Optimizer):
    """Spends ``waste`` queries itself per ask, then returns k codes (breaks the contract when it overspends)."""

    name = "greedy"

    def __init__(self, space, batch_size=4, seed=0, waste=0):
        super().__init__(space, batch_size, seed)
        self.waste = waste
        self.rng = np.random.default_rng(seed)

    def _ask(self):
        self.spend(self.waste)
        return self.space.sample(self.rng, self.k)

    def _tell(self, I, y):
        pass


def test_ask_limit_cuts_the_last_batch_and_an_overspending_ask_is_an_error():
    obj = problems.separable(d=4, n=8)
    res = maximize(obj, Greedy(obj.space, waste=2), budget=23)
    # asks: 2 + 4, 2 + 4, 2 + 4, then 2 + 3 (cut to the limit 5) = 23
    assert res.n_queries == 23 and res.n_external == 8 and len(res.values) == 15
    opt = Greedy(obj.space, waste=6)
    with pytest.raises(MangoError, match="spent 6 queries itself with a limit of 5"):
        opt.ask(5)
    assert Greedy(obj.space).ask(3).shape == (3, 4) and Greedy(obj.space).take_spent() == 0


class RateUnit(Unit):
    """A graded score whose reported quantity is coarser (as a spiking readout: rate = floor of the score)."""

    reported_name = "rate"

    @staticmethod
    def reported(values: np.ndarray) -> np.ndarray:
        return np.floor(values * 4) / 4


def test_maximize_run_dir_writes_the_cli_run_folder(tmp_path, monkeypatch):
    from mango.config import run_config

    def objective():
        return Objective(BlockGen(), RateUnit())

    res = maximize(objective(), "random", budget=30, seed=2, batch_size=7, run_dir=tmp_path / "py")
    # the typed config checks component names against the registry: register the local ones
    monkeypatch.setitem(registry._REG["generator"], "local-blocks", registry.Entry("local-blocks", "generator", BlockGen))
    monkeypatch.setitem(registry._REG["target"], "local-unit", registry.Entry("local-unit", "target", RateUnit))
    cfg = {"budget": 30, "seed": 2, "batch_size": 7, "optimizer": "random",
           "generator": "local-blocks", "target": "local-unit"}
    run_config(cfg, tmp_path / "cli", objective=objective())
    py = {p.name for p in (tmp_path / "py").iterdir()}
    assert py == {p.name for p in (tmp_path / "cli").iterdir()}
    assert {"result.json", "history.npz", "best.png", "journal.jsonl", "run.json"} <= py
    a = json.loads((tmp_path / "py" / "result.json").read_text())
    b = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert set(a) == set(b)
    assert a["best_value"] == b["best_value"] == res.best_value
    # effective batch size and the reported value beside the score
    assert a["batch_size"] == res.batch_size == 7 and a["batches"] == 5
    rate = np.floor(res.values * 4) / 4
    assert a["reported"] == {"name": "rate", "best": float(rate.max()),
                             "at_best_score": float(np.floor(res.best_value * 4) / 4)}
    with np.load(tmp_path / "py" / "history.npz") as h:
        np.testing.assert_array_equal(h["values"], res.values)
        np.testing.assert_array_equal(h["reported"], rate)
        assert h["values"].shape == (30,)
    import imageio.v3 as iio
    img = iio.imread(tmp_path / "py" / "best.png")
    expected = stimulus_images(BlockGen(), res.best_code[None])[0, ..., 0]
    assert img.shape == (128, 128)
    np.testing.assert_array_equal(img[::8, ::8], expected)


def test_effective_batch_size_is_the_optimizers_own_default_unless_given():
    obj = problems.separable(d=4, n=8)
    assert maximize(obj, "random", budget=20).batch_size == 10      # RandomSearch's default
    assert maximize(obj, "ga", budget=40).summary()["batch_size"] == 20
    assert maximize(obj, "random", budget=20, batch_size=4).summary()["batch_size"] == 4


def test_resume_replays_through_the_public_restore(tmp_path, monkeypatch):
    restored: list[int] = []
    real = BaseObjective.restore

    def spy(self, I, y):
        restored.append(len(y))
        return real(self, I, y)

    monkeypatch.setattr(BaseObjective, "restore", spy)
    base = problems.tt_random(d=6, n=6, rank=2, seed=1)
    first = maximize(base, "protes", budget=120, seed=3, batch_size=20, run_dir=tmp_path, checkpoint_every=2)
    assert restored == []
    again = problems.tt_random(d=6, n=6, rank=2, seed=1)
    second = maximize(again, "protes", budget=120, seed=3, batch_size=20, run_dir=tmp_path, checkpoint_every=2)
    assert sum(restored) == 120 and again.n_evaluated == 0 and again.n_queries == 120
    assert second.best_value == first.best_value and np.array_equal(second.best_code, first.best_code)
    np.testing.assert_array_equal(second.values, first.values)
    again(first.best_code[None])  # a journaled code is in the cache again: answered without evaluating
    assert again.n_evaluated == 0
