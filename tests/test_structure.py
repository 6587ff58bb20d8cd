"""The shared pieces issue 11 made single: typed run config, CLI helpers, journal reader, images,
channel selection, paper-weights lookup, registry names, compare expanding once, batch-size precedence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mango import registry
from mango.channels import select_channels
from mango.clitools import merge_table, parse_kv, slug
from mango.config import RunConfig, run_config
from mango.errors import ConfigError
from mango.imaging import save_png, to_uint8, upscale
from mango.journal import Journal, read_journal

PROBLEM = {"budget": 20, "optimizer": "random", "problem": {"name": "separable", "d": 4, "n": 8}}


# -- typed run config ---------------------------------------------------------------------------
def test_run_config_typed_values_and_plain_dict():
    cfg = RunConfig.from_dict({**PROBLEM, "batch_size": 5, "select": [0, 1]})
    assert cfg.budget == 20 and cfg.seed == 0 and cfg.batch_size == 5 and cfg.eval_batch_size is None
    assert cfg.optimizer.name == "random" and cfg.optimizer.params == {}
    assert cfg.problem.name == "separable" and cfg.problem.params == {"d": 4, "n": 8}
    # the stored dict: tables normalised, seed filled in, absent keys left out (what run.json held before)
    assert cfg.to_dict() == {"budget": 20, "seed": 0, "batch_size": 5, "select": [0, 1],
                             "optimizer": {"name": "random"}, "problem": {"name": "separable", "d": 4, "n": 8}}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict(cfg) is cfg  # already validated: not validated again


@pytest.mark.parametrize("key,value", [("budget", 2.5), ("budget", True), ("budget", "10"), ("budget", 0),
                                       ("seed", 1.0), ("seed", False), ("batch_size", True),
                                       ("batch_size", 2.5), ("eval_batch_size", 0), ("checkpoint_every", "3")])
def test_run_config_refuses_non_integers(key, value):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict({**PROBLEM, key: value})


@pytest.mark.parametrize("cfg,msg", [
    ({**PROBLEM, "generator": "vqvae-digits"}, "either [problem] or both"),
    ({**PROBLEM, "problem": {"name": "separable", "size": 3}}, "unknown parameter 'size' for problem"),
    ({**PROBLEM, "select": "max"}, "unknown channel selection 'max'"),
    ({**PROBLEM, "device": 0}, "device must be a string"),
    ({**PROBLEM, "optimizer": {"name": "random", "batch_size": 3}}, "unknown parameter 'batch_size'"),
])
def test_run_config_errors_name_the_value(cfg, msg):
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[")):
        RunConfig.from_dict(cfg)


def test_resume_compares_the_same_stored_dict(tmp_path):
    """A folder started from a dict resumes from the equivalent RunConfig (run.json unchanged)."""
    out = tmp_path / "run"
    first = run_config(PROBLEM, out)
    stored = json.loads((out / "run.json").read_text())
    again = run_config(RunConfig.from_dict(PROBLEM), out)
    assert json.loads((out / "run.json").read_text()) == stored == RunConfig.from_dict(PROBLEM).to_dict()
    assert again.best_value == first.best_value and again.n_queries == first.n_queries


# -- command-line helpers -----------------------------------------------------------------------
def test_parse_kv_and_merge_table():
    assert parse_kv(["a=1", "b=[1, 2]", "c=True", "d=x y"], "--p") == {"a": 1, "b": [1, 2], "c": True, "d": "x y"}
    with pytest.raises(ConfigError, match="--p 'a' must look like key=value"):
        parse_kv(["a"], "--p")
    cfg = {"target": "snn-digits"}
    merge_table(cfg, "target", None, ["unit=3"], "target")
    assert cfg["target"] == {"name": "snn-digits", "unit": 3}
    merge_table(cfg, "target", "cnn-digits", None, "target")  # a new name replaces the whole table
    assert cfg["target"] == {"name": "cnn-digits"}
    with pytest.raises(ConfigError, match="--gen-param given without a generator"):
        merge_table(cfg, "generator", None, ["x=1"], "gen")


def test_slug():
    assert slug("snn class 1 (spiking_out[1])") == "snn-class-1-spiking_out-1"
    assert slug("a//b") == "a-b" and slug("()") == "x"


# -- journal ------------------------------------------------------------------------------------
def test_read_journal_never_writes(tmp_path):
    j = Journal.open(tmp_path)
    j.append(np.zeros((2, 3), np.int64), np.array([1.0, 2.0]), 0.1)
    j.close()
    path = tmp_path / "journal.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"batch": 1, "I": [[0, 0')  # a torn line (a run killed, or still writing)
    before = path.read_bytes()
    rows = read_journal(tmp_path)
    assert len(rows) == 1 and rows[0].y.tolist() == [1.0, 2.0]
    assert path.read_bytes() == before, "a reader must leave the run folder untouched"
    assert read_journal(tmp_path / "missing") == []
    Journal.open(tmp_path).close()  # only resuming repairs
    assert path.read_bytes() == before[: before.rindex(b"\n") + 1]


# -- images -------------------------------------------------------------------------------------
def test_one_uint8_conversion_and_png(tmp_path):
    x = torch.tensor([[[[0.0, 0.5], [1.0, 2.0]]]])  # [1, 1, 2, 2]
    u = to_uint8(x)
    assert u.shape == (1, 2, 2, 1) and u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    assert to_uint8(x, (-1.0, 1.0))[0, 0, 0, 0] == 128
    assert upscale(np.eye(2, dtype=np.uint8), 3).shape == (6, 6)

    class Gen:
        def to_uint8(self, images):  # the generator's own conversion wins
            return np.full((images.shape[0], 2, 2, 1), 7, np.uint8)

    import imageio.v3 as iio

    img = iio.imread(save_png(x, tmp_path / "a.png", Gen()))
    assert img.shape == (128, 128) and (img == 7).all()
    assert iio.imread(save_png(torch.zeros(3, 3, 4, 4), tmp_path / "b.png")).shape == (128, 384, 3)


# -- channel selection --------------------------------------------------------------------------
@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor])
def test_select_channels_one_meaning(to):
    r = to(np.array([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]))
    assert np.allclose(np.asarray(select_channels(r, 1)), [3.0, 4.0])
    assert np.allclose(np.asarray(select_channels(r, [0, 2])), [3.0, 4.0])
    assert np.allclose(np.asarray(select_channels(r, "mean")), [3.0, 4.0])
    assert np.allclose(np.asarray(select_channels(r[:, :1], None)), [1.0, 2.0])
    assert np.allclose(np.asarray(select_channels(r[:, 0], None)), [1.0, 2.0])
    with pytest.raises(ConfigError, match="3 channels; choose"):
        select_channels(r, None)
    with pytest.raises(ConfigError, match="channel 3 does not exist"):
        select_channels(r, 3)


# -- paper weights ------------------------------------------------------------------------------
def test_paper_weights_precedence(tmp_path, monkeypatch):
    from mango.data import paper_weights_dir, paper_weights_file

    monkeypatch.setenv("MANGO_PAPER_WEIGHTS", str(tmp_path / "w"))
    assert paper_weights_dir() == tmp_path / "w"
    assert paper_weights_file("snn_cifar10.pt") == tmp_path / "w" / "snn_cifar10.pt"
    monkeypatch.setenv("MANGO_PAPER_WEIGHTS", str(tmp_path / "w" / "vqvae_cifar10.pt"))  # a file: its folder
    assert paper_weights_dir() == tmp_path / "w"
    # an explicit path beats the environment; a file path is used as is
    assert paper_weights_file("snn_cifar10.pt", tmp_path / "x") == tmp_path / "x" / "snn_cifar10.pt"
    assert paper_weights_file("snn_cifar10.pt", tmp_path / "mine.pt") == tmp_path / "mine.pt"
    monkeypatch.delenv("MANGO_PAPER_WEIGHTS")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "shared" / "weights" / "cifar10").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert paper_weights_dir().resolve() == (tmp_path / "shared" / "weights" / "cifar10").resolve()


# -- registry -----------------------------------------------------------------------------------
def test_registered_name_is_the_optimizers_name():
    from mango.optimizers import make_optimizer
    from mango.optimizers.base import Optimizer
    from mango.spaces import CodebookSpace

    for name in registry.names("optimizer"):
        opt = make_optimizer(name, CodebookSpace(4, 8), seed=0, budget=100)
        assert opt.name == name
        # the registry is the one place a name is written: no class carries its own literal
        assert "name" not in vars(type(opt)) and all("name" not in vars(c) for c in type(opt).__mro__
                                                      if c is not Optimizer and issubclass(c, Optimizer))


def test_an_ignored_budget_is_refused_not_swallowed():
    """``budget`` reaches only the optimizers that use it; passed to one that would ignore it,
    it is an unknown parameter and the error names the valid ones."""
    from mango.optimizers import make_optimizer
    from mango.spaces import CodebookSpace

    space = CodebookSpace(4, 8)
    for name in registry.names("optimizer"):
        takes = "budget" in registry.describe_params(registry.get("optimizer", name))
        assert takes == (name in {"gradient", "layout-elite"} or type(make_optimizer(name, space)).__module__.endswith(
            "evolutionary")), name
    with pytest.raises(ConfigError, match=r"unknown parameter 'budget' for optimizer 'random'; valid parameters"):
        make_optimizer("random", space, params={"budget": 10})
    with pytest.raises(ConfigError, match="unknown encoding 'auto'; valid choices: integer, choice"):
        make_optimizer("ngopt", space, params={"encoding": "auto"})


# -- compare: one expansion, batch-size precedence ----------------------------------------------
def test_compare_expands_once_and_reports_batch_sizes(tmp_path, monkeypatch, capsys):
    import mango.compare as compare
    from mango.cli import main

    calls = []
    real = compare.expand
    monkeypatch.setattr(compare, "expand", lambda cfg: calls.append(1) or real(cfg))
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "bs"\nbudget = 40\nbatch_size = 20\nworkers = 1\n'
                   '[[problems]]\nname = "separable"\nd = 4\nn = 8\n'
                   '[[optimizers]]\nname = "random"\n'
                   '[[optimizers]]\nname = "ga"\nlabel = "ga-own"\nbatch_size = 10\n')
    assert main(["compare", str(cfg), "--out", str(tmp_path / "o")]) == 0
    assert len(calls) == 1
    runs = json.loads((tmp_path / "o" / "compare.json").read_text())["runs"]
    sizes = {r["optimizer"]: r["config"]["batch_size"] for r in runs}
    assert sizes == {"random": 20, "ga-own": 10}  # entry > top-level
    md = (tmp_path / "o" / "report" / "report.md").read_text()
    assert "| batch |" in md and "| random | 1 | 20 |" in md and "| ga-own | 1 | 10 |" in md


def test_report_shows_optimizer_default_batch(tmp_path):
    from mango.compare import run_compare
    from mango.report import write_report

    cfg = {"name": "d", "budget": 20, "workers": 1, "problems": [{"name": "separable", "d": 4, "n": 8}],
           "optimizers": [{"name": "random"}]}
    assert not run_compare(cfg, tmp_path / "o", workers=1)["errors"]
    write_report(tmp_path / "o", gifs=False, html_page=False)
    default = registry.describe_params(registry.get("optimizer", "random"))["batch_size"]
    assert f"| random | 1 | {default} |" in (tmp_path / "o" / "report" / "report.md").read_text()
