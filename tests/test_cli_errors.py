"""Issue 13 items 11-15, 17: user errors end in one line naming the value and the valid choices
(exit code 2, no traceback), integer options refuse non-integers, huge batches are cut to the
budget, PROTES/GA defaults adapt to small batches, Ctrl-C tells how to resume, and list values
on the command line parse in both forms."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mango.cli import _config_from_args, build_parser, main
from mango.clitools import parse_kv
from mango import registry
from mango.errors import SEED_MAX, ConfigError, EvaluationError
from mango.loop import maximize
from mango.objective import FunctionObjective, Objective
from mango.optimizers import make_optimizer
from mango.problems import separable
from mango.spaces import CodebookSpace

SNN = ["run", "--generator", "vqvae-digits", "--target", "snn-digits", "--target-param", "layer=spiking_out",
       "--target-param", "unit=3", "--budget", "20", "-q"]
PROB = ["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8", "--budget", "20", "-q"]


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """``mango ARGV`` exits 2 with one line containing every needle and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in err, err
    return err


# -- item 11 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,needles", [
    (["--target-param", "T=abc"], ["parameter T must be int", "'abc'"]),
    (["--target-param", "position=99"], ["parameter position must be", "got 99"]),
    (["--optimizer", "protes", "--opt-param", "k_top=abc"], ["optimizer 'protes' parameter k_top must be int", "'abc'"]),
    (["--device", "nonsense"], ["unknown device 'nonsense'", "valid devices here: cpu"]),
])
def test_bad_values_end_in_one_line(capsys, extra, needles):
    _fails(capsys, SNN + extra, *needles)


@pytest.mark.parametrize("param, msg", [("uniform_pick=best", "uniform_pick must be one of 'model', 'random', got 'best'"),
                                        ("block_textures=1.5", "block_textures must be in [0, 1] and texture_top >= 1, got 1.5, 8")])
def test_bad_optimizer_value_is_refused_before_the_progress_bar(tmp_path, capsys, param, msg):
    """Without ``-q`` too: the optimizer is built before the bar starts, so the error is the only line,
    and no run folder is created."""
    argv = [a for a in SNN if a != "-q"] + ["--opt-param", param, "--out", str(tmp_path / "run")]
    _fails(capsys, argv, msg)
    assert not (tmp_path / "run" / "journal.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_cpu_only_torch(capsys):
    _fails(capsys, SNN + ["--device", "cuda"], "device 'cuda' is not available", "valid devices here: cpu")


def test_config_not_utf8_or_a_folder(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe budget = 3\n")
    _fails(capsys, ["run", "--config", str(bad)], "not UTF-8", str(bad))
    _fails(capsys, ["run", "--config", str(tmp_path)], "is a folder", str(tmp_path))


def test_out_folder_that_cannot_be_written(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(capsys, PROB + ["--out", str(afile / "run")], "--out", "cannot be used as a run folder")
    _fails(capsys, PROB + ["--out", str(afile)], "is a file")
    if Path("/proc").is_dir():
        _fails(capsys, PROB + ["--out", "/proc/mango-run"], "/proc/mango-run", "cannot be used as a run folder")
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            _fails(capsys, PROB + ["--out", str(ro / "run")], "cannot be used as a run folder")
        finally:
            ro.chmod(0o700)


def test_checkpoint_every_zero_is_refused_before_anything_is_journaled(tmp_path, capsys):
    obj = separable(d=4, n=8)
    with pytest.raises(ConfigError, match="checkpoint_every must be an integer >= 1, got 0"):
        maximize(obj, "protes", 40, 0, batch_size=10, run_dir=tmp_path / "r", checkpoint_every=0)
    assert not (tmp_path / "r" / "journal.jsonl").exists() or \
        (tmp_path / "r" / "journal.jsonl").read_text() == ""
    cfg = tmp_path / "c.toml"
    cfg.write_text('budget = 20\ncheckpoint_every = 0\n[problem]\nname="separable"\n[optimizer]\nname="random"\n')
    _fails(capsys, ["run", "--config", str(cfg), "--out", str(tmp_path / "o")], "checkpoint_every", "got 0")
    assert not (tmp_path / "o" / "journal.jsonl").exists()


def test_seed_not_an_integer(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('budget = 20\nseed = "a"\n[problem]\nname="separable"\n[optimizer]\nname="random"\n')
    _fails(capsys, ["run", "--config", str(cfg)], "seed must be", "'a'")
    with pytest.raises(ConfigError, match="seed must be an integer >= 0, got 'a'"):
        maximize(separable(d=4, n=8), "random", 20, "a")


class _Gen(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.space = CodebookSpace(d=4, n=8, shape=(2, 2))

    def forward(self, z):
        return z[:, None].float() / 8


@pytest.mark.parametrize("bad,typename", [("abc", "str"), (None, "NoneType"), ({"a": 1}, "dict")])
def test_custom_target_returning_no_numbers(bad, typename):
    obj = Objective(_Gen(), lambda x: bad)
    with pytest.raises(EvaluationError, match=f"returned a {typename}"):
        obj(np.zeros((2, 4), dtype=np.int64))
    fobj = FunctionObjective(lambda I: bad, CodebookSpace(d=4, n=8))
    with pytest.raises(EvaluationError, match=f"returned a {typename}"):
        fobj(np.zeros((2, 4), dtype=np.int64))


def test_evaluation_error_is_exit_2_on_the_command_line(tmp_path, capsys, monkeypatch):
    from mango import cli

    monkeypatch.setattr(cli, "build_objective",
                        lambda cfg: FunctionObjective(lambda I: None, CodebookSpace(d=4, n=8)))
    _fails(capsys, PROB + ["--optimizer", "random"], "returned a NoneType")


def test_negative_seed_on_the_command_line(capsys):
    """A negative seed was a numpy traceback from the first random draw; now one line naming it."""
    _fails(capsys, PROB + ["--optimizer", "random", "--seed", "-3"], "seed must be an integer >= 0, got -3")


@pytest.mark.parametrize("extra, msg", [(["--budget", "0"], "budget must be a positive integer, got 0"),
                                        (["--seed", "-3"], "seed must be an integer >= 0, got -3")])
def test_demo_checks_budget_and_seed_before_it_starts(tmp_path, capsys, extra, msg):
    """`mango demo --budget 0` made its folder and drew a progress bar before the run refused the budget."""
    out = tmp_path / "demo"
    _fails(capsys, ["demo", "--out", str(out), "--quiet"] + extra, msg)
    assert not out.exists()


def test_seed_above_2_to_the_32_on_the_command_line(capsys):
    """nevergrad (and numpy's RandomState) refuse a seed >= 2**32: that was a traceback from cma, ngopt and the
    other nevergrad optimizers (protes overflowed above 2**63); now one line naming the bound, for every optimizer."""
    for opt in ("cma", "random"):
        _fails(capsys, PROB + ["--optimizer", opt, "--seed", str(2**32)], "seed must be an integer <= 4294967295",
               "got 4294967296")


@pytest.mark.parametrize("name", [n for n in registry.names("optimizer") if n != "gradient"])
def test_every_optimizer_takes_the_largest_seed(name):
    """The bound is the real one: each registered optimizer runs with seed 2**32 - 1 (gradient AM needs a
    model objective; its seed goes to torch, which takes up to 2**64 - 1)."""
    res = maximize(separable(d=4, n=8), name, 20, SEED_MAX)
    assert res.n_queries == 20


# -- item 12 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line,key", [("batch_size = true", "batch_size"), ("batch_size = 2.5", "batch_size"),
                                      ("seed = 2.5", "seed"), ("seed = true", "seed"), ("budget = 2.0", "budget"),
                                      ("seed = -1", "seed must be an integer >= 0, got -1")])
def test_toml_non_integers_refused(tmp_path, capsys, line, key):
    cfg = tmp_path / "c.toml"
    body = f'{line}\n[problem]\nname="separable"\n[optimizer]\nname="random"\n'
    cfg.write_text(body if line.startswith("budget") else "budget = 20\n" + body)
    _fails(capsys, ["run", "--config", str(cfg)], key)


@pytest.mark.parametrize("kw,key", [({"batch_size": True}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                                    ({"seed": 2.5}, "seed"), ({"seed": True}, "seed"),
                                    ({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed must be an integer >= 0"),
                                    ({"seed": 2**32}, "seed must be an integer <= 4294967295")])
def test_python_api_non_integers_refused(kw, key):
    space = CodebookSpace(d=4, n=8)
    with pytest.raises(ConfigError, match=key):
        make_optimizer("random", space, budget=20, **kw)
    seed = kw.pop("seed", 0)
    with pytest.raises(ConfigError, match=key):
        maximize(separable(d=4, n=8), "random", 20, seed, **kw)


def test_optimizer_params_from_python_are_checked():
    space = CodebookSpace(d=4, n=8)
    with pytest.raises(ConfigError, match=r"k_top must be int \| None, got 'abc' \(str\)"):
        make_optimizer("protes", space, budget=20, params={"k_top": "abc"})
    with pytest.raises(ConfigError, match=r"n_elite must be int \| None, got 1.5"):
        make_optimizer("ga", space, budget=20, params={"n_elite": 1.5})


# -- item 13 -----------------------------------------------------------------------------------

def test_huge_batch_is_cut_to_the_budget_before_allocating(caplog):
    from mango.optimizers import MAX_BATCH_SIZE

    space = CodebookSpace(d=16, n=8)
    with caplog.at_level(logging.WARNING, logger="mango.optimizers"):
        opt = make_optimizer("random", space, batch_size=1_000_000_000, budget=20)
    assert opt.k == 20
    assert "batch_size 1000000000 is larger than the budget of 20 queries: using batch_size 20" in caplog.text
    with pytest.raises(ConfigError, match=f"at most {MAX_BATCH_SIZE}"):
        make_optimizer("random", space, batch_size=1_000_000_000, budget=10**10)


@pytest.mark.parametrize("opt", ["random", "protes"])
def test_huge_batch_on_the_command_line_runs(tmp_path, capsys, opt):
    assert main(PROB + ["--optimizer", opt, "--batch-size", "1000000000", "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert res["n_queries"] == 20


# -- item 14 -----------------------------------------------------------------------------------

def test_protes_defaults_adapt_to_small_batches(capsys):
    space = CodebookSpace(d=4, n=8)
    assert make_optimizer("protes", space, batch_size=4, budget=20).k_top == 2
    assert make_optimizer("protes", space, batch_size=1, budget=20).k_top == 1
    assert make_optimizer("protes", space, budget=1000).k_top == 5  # the default batch of 50
    assert make_optimizer("ga", space, batch_size=2, budget=20).n_elite == 1
    assert main(PROB + ["--optimizer", "protes", "--batch-size", "4"]) == 0
    capsys.readouterr()
    _fails(capsys, PROB + ["--optimizer", "protes", "--batch-size", "4", "--opt-param", "k_top=5"],
           "k_top=5 conflicts with batch_size=4", "leave k_top unset")


# -- item 15 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_prints_where_the_run_stands_and_how_to_resume(tmp_path, sig, code):
    """Ctrl-C, and SIGTERM alike (a job scheduler's stop; before, it killed the run without a word), print
    where the run stands and how to resume it, and leave result.json at the best the run reached, marked
    interrupted (before, it kept the last throttled write: 50 of 150 queries)."""
    out = tmp_path / "r"
    argv = ["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8",
            "--optimizer", "random", "--budget", "100000000", "--batch-size", "10", "--out", str(out), "-q"]
    # the child starts with Ctrl-C's default action, as in a terminal: a test run launched in the
    # background of a non-interactive shell inherits SIGINT *ignored*, and the run would not stop
    proc = subprocess.Popen([sys.executable, "-m", "mango.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted after" in err and "of 100000000 queries; best so far" in err
    assert f"run folder: {out}" in err
    resume = [ln for ln in err.splitlines() if ln.startswith("resume with: ")]
    assert resume and resume[0] == "resume with: mango " + " ".join(argv)
    rows = [json.loads(ln) for ln in journal.read_text().splitlines()]
    res = json.loads((out / "result.json").read_text())
    n_said = int(err.split("interrupted after ")[1].split(" of ")[0])
    assert res["status"] == "interrupted" and res["n_queries"] == n_said
    # the journal may hold one batch more: the signal can come between its write and the callbacks
    assert sum(len(r["y"]) for r in rows) - 10 <= n_said <= sum(len(r["y"]) for r in rows)
    assert res["best_value"] == max(max(r["y"]) for r in rows[:n_said // 10])
    said = float(err.split("best so far ")[1].split(".\n")[0].rstrip("."))
    assert said == pytest.approx(res["best_value"], rel=1e-5)


# -- item 17 -----------------------------------------------------------------------------------

def test_list_values_parse_in_both_forms():
    for text in ("1,16,16", "[1,16,16]", "[1, 16, 16]"):
        assert parse_kv([f"input_shape={text}"], "--target-param") == {"input_shape": [1, 16, 16]}
    assert parse_kv(["position=2,3", "x=0.5,1", "one=3,"], "f") == {"position": [2, 3], "x": [0.5, 1], "one": [3]}
    assert parse_kv(["layer=conv1", "model=a,b.pt", "flag=TRUE"], "f") == {
        "layer": "conv1", "model": "a,b.pt", "flag": True}
    args = build_parser().parse_args(SNN + ["--target-param", "position=1,2"])
    assert _config_from_args(args)["target"]["position"] == [1, 2]
    with pytest.raises(ConfigError, match="has no key"):
        parse_kv(["=3"], "--target-param")


def test_layers_checks_target_params(capsys):
    _fails(capsys, ["layers", "snn-digits", "--target-param", "T=abc"], "parameter T must be int", "'abc'")


def test_compare_scan_and_rig_run_check_their_folders(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text('budget = 20\nseeds = [0]\noptimizers = ["random"]\n[problem]\nname="separable"\n')
    _fails(capsys, ["compare", str(cfg), "--out", str(afile / "c")], "cannot be used as a run folder")
    _fails(capsys, ["scan", "--generator", "vqvae-digits", "--target", "snn-digits", "--layer", "spiking_out",
                    "--units", "0", "--budget", "20", "--seeds", "0,a", "--out", str(tmp_path / "s")],
           "--seeds must be integers", "'0,a'")
    _fails(capsys, ["rig-run", "--generator", "vqvae-digits", "--budget", "20", "--out", str(afile / "r")],
           "cannot be used as a run folder")


def test_a_target_that_cannot_take_the_generators_images_is_one_line_and_the_folder_can_be_reused(tmp_path, capsys):
    """A 3-channel generator fed to the 1-channel digits SNN used to end in torch's conv2d traceback, and the
    folder it left (config only, no batch) then refused the corrected command as "another config"."""
    out = tmp_path / "run"
    bad = ["run", "--generator", "fourier", "--gen-param", "channels=3", "--target", "snn-digits",
           "--budget", "20", "-q", "--out", str(out)]
    err = _fails(capsys, bad, "target SpikingSequential", "failed on the images of generator",
                 "shape [10, 3, 16, 16]", "expected input", "to have 1 channels", "`mango generators`")
    assert not (out / "journal.jsonl").exists() or (out / "journal.jsonl").stat().st_size == 0, err
    good = ["run", "--generator", "fourier", "--target", "snn-digits", "--budget", "20", "-q", "--out", str(out)]
    assert main(good) == 0
    assert json.loads((out / "run.json").read_text())["generator"].get("channels", 1) == 1
    assert (out / "result.json").exists()
    # once a batch is recorded, another config is refused again: nothing recorded is ever replaced
    assert main(bad) == 2
    assert "was started with another config" in capsys.readouterr().err


def test_api_checks_the_device_and_the_images_fit_the_model():
    import mango

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())   # wants 3 colour channels
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'; valid devices here: cpu"):
        mango.maximize(model, "0:1", generator="vqvae-digits", budget=20, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda' is not available"):
            mango.maximize(model, "0:1", generator="vqvae-digits", budget=20, device="cuda")
    with pytest.raises(ConfigError, match=r"failed on the images of generator .*shape \[10, 1, 16, 16\].*"
                                          r"RuntimeError: .*channels"):
        mango.maximize(model, "0:1", generator="vqvae-digits", budget=20)
    # the same model through a transform that makes the images fit runs
    res = mango.maximize(model, "0:1", generator="vqvae-digits", budget=20, transform=lambda x: x.repeat(1, 3, 1, 1))
    assert np.isfinite(res.best_value)


def test_empty_values_are_refused_not_taken_as_defaults(tmp_path, capsys):
    """'--target-param layer=' ran the default layer, '--out ""' ran with no folder, and 'scan --seeds ""'
    meant seed 0, each without a word."""
    _fails(capsys, SNN + ["--target-param", "layer="], "'layer=' has no value")
    _fails(capsys, SNN + ["--out", ""], "--out '' is empty")
    _fails(capsys, ["scan", "--generator", "vqvae-digits", "--target", "snn-digits", "--layer", "spiking_out",
                    "--units", "0", "--budget", "20", "--seeds", "", "--out", str(tmp_path / "s")],
           "--seeds must be integers", "got ''")


def test_demo_and_report_name_an_output_path_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _fails(capsys, ["demo", "--out", str(afile)], "is a file; it must be a folder")
    run = tmp_path / "r"
    assert main(PROB + ["--out", str(run)]) == 0
    capsys.readouterr()
    _fails(capsys, ["report", str(run), "--out", str(afile)], "is a file; it must be a folder")


def test_the_summary_of_an_objective_expression_names_it_and_gives_no_rate_notes():
    """'mem(spiking_out:1)' read as a saturated rate, and a difference of rates as a silent unit."""
    from mango.report import _target_label, run_hints

    cfg = {"target": {"name": "snn-unit", "model": "m:f", "objective": "mem(spiking_out:1)", "T": 16}}
    assert run_hints(cfg, 1.48) == [] and run_hints(cfg, -0.2) == []
    assert _target_label(cfg) == "objective mem(spiking_out:1)"
    single = {"target": {"name": "snn-unit", "model": "m:f", "objective": "spiking_out:1"}}
    assert run_hints(single, 0.0001, "rate", 0.0)       # one unit's rate: the silent-unit note stays


def test_scan_opt_param_names_the_default_optimizers_parameters(tmp_path, capsys):
    """`mango scan --opt-param elit=3` without --optimizer said "--opt-param given without a optimizer",
    though the default optimizer is what runs; now the unknown parameter itself is named."""
    from mango.optimizers import DEFAULT_OPTIMIZER

    rc = main(["scan", "--generator", "vqvae-digits", "--target", "snn-digits", "--layer", "spiking_out",
               "--units", "0", "--budget", "10", "--opt-param", "elit=3", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and f"unknown parameter 'elit' for optimizer '{DEFAULT_OPTIMIZER}'" in err, err
    assert "without a" not in err and "elite" in err.split("valid parameters:")[1], err
