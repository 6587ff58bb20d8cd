"""Nonsensical values and arguments a caller can give: each is refused in one line that names it.

Every case here ran (or ended in a raw traceback from deep inside) before it was checked: NaN or
infinite parameters reached a run (a NaN ``tie_break`` failed only at the first batch, a NaN GA step
ran as if it were -1e9), ``T=2.5`` was cut to 2, ``unit=True`` was taken as unit 1, ``layer=""`` as the
last layer, a negative teneva ``dr_max`` failed in TT-cross's worker thread, a PROTES rank of 10**5
asked jax for 1.2 TB, and ``optimizer=None`` or ``callbacks=[3]`` raised AttributeError / TypeError.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import mango
from mango import loop
from mango.errors import ConfigError
from mango.problems import separable


@pytest.mark.parametrize("name,params,msg", [
    ("ttopt", {"dr_max": -1}, r"dr_max must be an integer >= 0, got -1"),
    ("ttopt", {"qtt": "x"}, r"qtt must be bool, got 'x'"),
    ("protes", {"rank": 100000}, r"rank=100000 is too large for this space: .*GiB"),
    ("protes", {"lr": math.inf}, r"lr must be a finite number, got inf"),
    ("ga", {"mutation_scale": math.nan}, r"mutation_scale must be a finite number, got nan"),
    ("ga", {"mutation_scale": -1.0}, r"mutation_scale must be > 0"),
    ("ga", {"temperature": math.inf}, r"temperature must be a finite number, got inf"),
    ("elite", {"model_reg": 0.0}, r"model_reg must be > 0"),
    ("elite", {"restart_gain": math.inf}, r"restart_gain must be a finite number, got inf"),
    ("elite", {"direct_reg": float("inf")}, r"direct_reg must be a finite number, got inf"),
    ("elite", {"uniform_frac": np.float64("nan")}, r"uniform_frac must be a finite number, got nan"),
])
def test_bad_optimizer_values_are_refused_before_a_run(name, params, msg):
    with pytest.raises(ConfigError, match=msg):
        loop.maximize(separable(d=4, n=8), name, 30, 0, params=params)


def test_an_infinite_default_may_be_given_back():
    """Infinity is refused unless it is the parameter's own default (a caller repeating the default)."""
    from mango.registry import _check_scalar
    import inspect

    def f(timeout: float = math.inf, scale: float = 1.0):
        return timeout, scale

    sig = inspect.signature(f)
    _check_scalar("target", "f", "timeout", math.inf, sig.parameters["timeout"])
    with pytest.raises(ConfigError, match="timeout must be a finite number, got nan"):
        _check_scalar("target", "f", "timeout", math.nan, sig.parameters["timeout"])
    with pytest.raises(ConfigError, match="scale must be a finite number, got -inf"):
        _check_scalar("target", "f", "scale", -math.inf, sig.parameters["scale"])


@pytest.mark.parametrize("params,msg", [
    ({"tie_break": float("nan")}, r"tie_break must be a finite number, got nan"),
    ({"unit": True}, r"parameter unit must be int \| list\[int\], got True \(bool\)"),
    ({"layer": ""}, r"layer must be the name of a spiking layer .* got ''; valid choices: .*spiking_out"),
    ({"position": "(1,2)"}, r"position must be a list of integers .* got '\(1,2\)'"),
    ({"T": 2.5}, r"parameter T must be int, got 2.5"),
])
def test_bad_target_values_are_refused(params, msg):
    with pytest.raises(ConfigError, match=msg):
        mango.registry.create("target", "snn-digits", params)


def test_an_integer_unit_of_numpy_or_torch_is_still_taken():
    import torch

    a = mango.registry.create("target", "snn-digits", {"unit": np.int64(3), "position": None})
    b = mango.registry.create("target", "cnn-digits", {"layer": "conv2", "unit": 1, "position": [np.int64(2), 3]})
    c = mango.registry.create("target", "snn-digits", {"unit": 3})
    assert a.spec == c.spec and b.spec.position == (2, 3)
    from targets.units import UnitSpec
    assert UnitSpec.make(torch.tensor(4)).unit == 4
    with pytest.raises(ConfigError, match="unit must be an integer"):
        UnitSpec.make(2.5)
    with pytest.raises(ConfigError, match="unit must be an integer"):
        UnitSpec.make("3")


def test_generator_values_and_a_missing_device_are_refused():
    with pytest.raises(ConfigError, match=r"generator 'fourier' parameter contrast must be a finite number, got inf"):
        mango.registry.create("generator", "fourier", {"contrast": math.inf})
    with pytest.raises(ConfigError, match=r"device 'cuda:0' is not available.*valid devices here: cpu"):
        mango.registry.create("target", "snn-digits", {"device": "cuda:0"})


def test_api_values_of_the_wrong_kind_are_one_line():
    snn = mango.registry.create("target", "snn-digits").net
    run = dict(generator="vqvae-digits", budget=10, optimizer="random")
    with pytest.raises(ConfigError, match=r"parameter T must be int \| None, got 2.5"):
        mango.maximize(snn, "spiking_out:3", T=2.5, **run)
    with pytest.raises(ConfigError, match=r"parameter fast must be bool, got 'no'"):
        mango.maximize(snn, "spiking_out:3", fast="no", **run)
    with pytest.raises(ConfigError, match=r"optimizer must be a registered name \(.*elite.*\) or an Optimizer"):
        mango.maximize(snn, "spiking_out:3", **{**run, "optimizer": None})
    with pytest.raises(ConfigError, match=r"optimizer params must be a dict .* got 'k=1'"):
        mango.maximize(snn, "spiking_out:3", optimizer_params="k=1", **run)
    with pytest.raises(ConfigError, match=r"callbacks must be callables .* 3 \(int\) is not"):
        mango.maximize(snn, "spiking_out:3", callbacks=[3], **run)
    res = mango.maximize(snn, "spiking_out:3", callbacks=None, **run)      # None: no callbacks
    assert res.n_queries == 10


def test_a_rig_backoff_below_zero_is_refused():
    from mango.rig import make_client

    with pytest.raises(ConfigError, match=r"rig backoff .* must be a finite number >= 0, got -1"):
        make_client("zmq", backoff=-1)


def test_toml_nan_is_refused_at_config_time(tmp_path, capsys):
    cfg = tmp_path / "f.toml"
    cfg.write_text('budget = 20\n[generator]\nname = "fourier"\ndecay = nan\n'
                   '[target]\nname = "cnn-digits"\nunit = 1\n[optimizer]\nname = "random"\n')
    from mango.cli import main

    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "decay must be a finite number, got nan" in err
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_compare_refuses_zero_workers_before_its_bar(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "t"\nbudget = 20\nseeds = [0]\nworkers = 0\n[[problems]]\nname = "separable"\nd = 4\n'
                   'n = 8\n[[optimizers]]\nname = "random"\n')
    from mango.cli import main

    assert main(["compare", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "workers must be a positive integer, got 0" in err and "runs:" not in err
    assert not any((tmp_path / "out").rglob("*.json"))                     # nothing of the grid was written


def test_paths_devices_and_huge_integers_pass_the_type_check():
    """A review found the scalar check refusing a pathlib.Path for a ``str | None`` weights path and a
    torch.device for ``device: str`` (the loaders take both), and float(10**400) overflowing in it."""
    import inspect
    from pathlib import Path

    import torch

    from mango.registry import _check_scalar

    def f(weights: str | None = None, device: str = "cpu", k: int = 1):
        return weights, device, k

    sig = inspect.signature(f)
    _check_scalar("generator", "f", "weights", Path("w.pt"), sig.parameters["weights"])
    _check_scalar("generator", "f", "device", torch.device("cpu"), sig.parameters["device"])
    _check_scalar("optimizer", "f", "k", 10 ** 400, sig.parameters["k"])
    with pytest.raises(ConfigError, match=r"parameter weights must be str \| None, got 3"):
        _check_scalar("generator", "f", "weights", 3, sig.parameters["weights"])


def test_a_deleted_history_of_a_finished_run_is_written_again(tmp_path, capsys, caplog):
    from mango.cli import main

    args = ["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8", "--budget", "20",
            "--optimizer", "random", "-q", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    before = dict(np.load(tmp_path / "r" / "history.npz"))
    stored = (tmp_path / "r" / "result.json").read_bytes()
    (tmp_path / "r" / "history.npz").unlink()
    with caplog.at_level("WARNING", logger="mango.loop"):
        assert main(args) == 0
    assert any("history.npz was missing; written again from the journal" in r.getMessage() for r in caplog.records)
    after = dict(np.load(tmp_path / "r" / "history.npz"))
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert (tmp_path / "r" / "result.json").read_bytes() == stored          # the stored result is left as it was


@pytest.mark.parametrize("line,msg", [
    ('out = 5', "compare config key 'out' must be a non-empty string (an output folder), got 5"),
    ('budgets = "30"', "budgets must be a list of positive integers (e.g. [100, 300, 1000]), got '30'"),
    ('ray = {address = "local", bogus = 1}', "unknown [ray] keys ['bogus']; valid keys: address, num_cpus"),
])
def test_compare_config_slips_are_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, line, msg):
    """`out = 5` was a TypeError from Path(); `budgets = "30"` was walked character by character ('got 3');
    an unknown [ray] key was found only after compare.json had been written."""
    from mango.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'name = "t"\nbudget = 40\nseeds = [0]\n{line}\n[[problems]]\nname = "separable"\nd = 4\nn = 8\n'
                   '[[optimizers]]\nname = "random"\n')
    assert main(["compare", str(cfg), "--no-report"]) == 2
    assert msg in capsys.readouterr().err
    assert not list(tmp_path.rglob("compare.json"))
