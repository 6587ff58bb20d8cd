"""The command line: run folders, resume, listings and errors that name the valid choices."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mango.cli import main


def test_run_writes_result_history_and_journal(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["run", "--problem", "separable", "--problem-param", "d=8", "--problem-param", "n=16",
               "--optimizer", "random", "--budget", "200", "--batch-size", "50", "--seed", "3",
               "--out", str(out), "-q"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert res["n_queries"] == 200 and res["config"]["seed"] == 3 and res["seed"] == 3
    assert {"torch", "numpy", "jax", "teneva", "nevergrad"} <= set(res["versions"])
    hist = np.load(out / "history.npz")
    assert hist["values"].shape == (200,) and hist["best_so_far"][-1] == pytest.approx(res["best_value"])
    assert len((out / "journal.jsonl").read_text().splitlines()) == 4
    # the same command again resumes the finished run: nothing is evaluated twice
    assert main(["run", "--problem", "separable", "--problem-param", "d=8", "--problem-param", "n=16",
                 "--optimizer", "random", "--budget", "200", "--batch-size", "50", "--seed", "3",
                 "--out", str(out), "-q"]) == 0
    assert len((out / "journal.jsonl").read_text().splitlines()) == 4
    assert json.loads((out / "result.json").read_text())["best_value"] == res["best_value"]


def test_toml_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('budget = 100\nseed = 1\n[problem]\nname = "quadratic-grid"\nd = 4\nn = 8\n'
                   '[optimizer]\nname = "cma"\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "o"), "-q"]) == 0
    assert json.loads((tmp_path / "o" / "result.json").read_text())["config"]["optimizer"]["name"] == "cma"


@pytest.mark.parametrize("toml,msg", [
    ('budget = 10\nbudgett = 3\n[problem]\nname="separable"\n[optimizer]\nname="random"\n',
     "unknown config key 'budgett'; valid choices: budget"),
    ('budget = 10\n[problem]\nname="separable"\n[optimizer]\nname="randm"\n',
     "unknown optimizer 'randm'; valid choices: random"),
    ('budget = 0\n[problem]\nname="separable"\n[optimizer]\nname="random"\n', "budget must be a positive integer"),
    ('budget = 10\n[problem]\nname="separable"\nsize=3\n[optimizer]\nname="random"\n',
     "unknown parameter 'size' for problem 'separable'; valid parameters: d, n, seed"),
    ('budget = 10\n[problem]\nname="separable"\n[optimizer]\nname="protes"\ntop=3\n',
     "unknown parameter 'top' for optimizer 'protes'"),
])
def test_bad_config_names_key_and_choices(tmp_path, capsys, toml, msg):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    assert main(["run", "--config", str(cfg), "-q"]) == 2
    assert msg in capsys.readouterr().err


def test_optimizers_listing(capsys):
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    for name in ("protes", "ttopt", "random", "ngopt", "portfolio", "cma", "diagonal-cma", "two-points-de",
                 "discrete-one-plus-one"):
        assert f"\n{name}\n" in "\n" + out
    assert "resample a code uniformly" in out and "arbitrary for codebook" in out


def test_console_script_installed():
    p = subprocess.run([sys.executable, "-m", "mango.cli", "problems"], capture_output=True, text=True)
    assert p.returncode == 0 and "tt-random" in p.stdout


def test_layers_lists_spiking_layers_with_shapes(capsys):
    assert main(["layers", "snn-digits"]) == 0
    out = capsys.readouterr().out
    for name in ("spiking1", "spiking2", "spiking_out"):
        assert name in out
    assert "10" in out.split("spiking_out", 1)[1].splitlines()[0]        # the read-out's 10 class neurons


def test_demo_writes_both_units_and_optimizers(tmp_path, capsys):
    """`mango demo` (small budget): one class neuron and one hidden unit, the default optimizer and random,
    run folders; the table shows the firing rate (a multiple of 1/T), not the graded search score."""
    import json

    from mango.optimizers import DEFAULT_OPTIMIZER

    assert main(["demo", "--out", str(tmp_path / "demo"), "--budget", "100", "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert len(summary) == 2 and any("class" in k for k in summary) and any("hidden" in k for k in summary)
    for label, row in summary.items():
        assert set(row) == {DEFAULT_OPTIMIZER, "random"}
        for r in row.values():
            assert r["queries"] == 100 and r["reported"] == "rate" and 1 <= r["queries_to_best"] <= 100
            assert 0 < r["best"] <= 1 and r["best"] <= r["best_score"] < r["best"] + 1 / 16  # score breaks ties
            if "class" in label:                                  # one neuron, T = 16: steps of 1/16
                assert r["best"] * 16 == round(r["best"] * 16)
    assert len(list((tmp_path / "demo").rglob("best.png"))) == 4
    out = capsys.readouterr().out
    assert DEFAULT_OPTIMIZER in out and "best rate" in out


def test_compare_cli_from_toml(tmp_path, capsys):
    """`mango compare CONFIG.toml`: runs the grid, prints the table, writes the report; a rerun skips all."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\nbudget = 20\nseeds = [0]\nbatch_size = 10\nworkers = 1\n'
                   '[[generators]]\nname = "vqvae-digits"\n'
                   '[[targets]]\nname = "snn-digits"\nlayer = "spiking_out"\nunits = [0, 1]\nT = 4\n'
                   '[[optimizers]]\nname = "random"\n[[optimizers]]\nname = "ga"\n')
    out = tmp_path / "cmp"
    assert main(["compare", str(cfg), "--out", str(out)]) == 0
    assert (out / "report" / "report.md").is_file() and (out / "report" / "report.html").is_file()
    assert len(list((out / "runs").rglob("result.json"))) == 4
    first = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("result.json")}
    capsys.readouterr()
    assert main(["compare", str(cfg), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("result.json")} == first


def test_progress_and_run_lines_show_the_rate_beside_the_score(tmp_path, capsys):
    """The progress bar (and a compare/scan run line) showed the graded search score as 'best': for a
    spiking unit it now shows the firing rate first and the score beside it, as the summary does."""
    out = tmp_path / "r"
    assert main(["run", "--generator", "vqvae-digits", "--target", "snn-digits", "--target-param", "layer=spiking2",
                 "--target-param", "unit=3", "--optimizer", "random", "--budget", "50", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    rate, score = res["reported"]["at_best_score"], res["best_value"]
    assert rate != score                                               # the check can tell them apart
    assert f"rate={rate:.4g} (score {score:.4g})" in err
    assert main(["scan", "--generator", "vqvae-digits", "--target", "snn-digits", "--layer", "spiking2",
                 "--units", "3", "--optimizer", "random", "--budget", "50", "--out", str(tmp_path / "s")]) == 0
    cap = capsys.readouterr()
    assert f"spiking2[3] | random | seed 0: rate {rate:.5g} (score {score:.5g})" in cap.out + cap.err
    # a problem (no reported quantity) keeps the plain 'best='
    assert main(["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8",
                 "--budget", "20", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "best=" in err and "score" not in err


def test_a_recorded_run_runs_again_from_its_files(tmp_path, capsys):
    """``--config DIR/result.json`` (or run.json) re-runs a recorded run; ``--out DIR`` alone resumes it; and
    result.json carries every optimizer setting and what produced it."""
    out = tmp_path / "r"
    argv = ["run", "--problem", "separable", "--problem-param", "d=6", "--problem-param", "n=8",
            "--optimizer", "elite", "--opt-param", "elite=4", "--budget", "60", "--seed", "5", "--out", str(out), "-q"]
    assert main(argv) == 0
    res = json.loads((out / "result.json").read_text())
    settings = res["optimizer_settings"]
    assert settings["elite"] == 4 and settings["uniform_codes"] == 64 and settings["starts"] == "natural"
    assert {"cma", "optax", "scikit-learn", "cpu", "torch_threads"} <= set(res["versions"])
    for recorded in ("result.json", "run.json"):
        again = tmp_path / f"again_{recorded}"
        assert main(["run", "--config", str(out / recorded), "--out", str(again), "-q"]) == 0
        rerun = json.loads((again / "result.json").read_text())
        assert rerun["best_code"] == res["best_code"] and rerun["best_value"] == res["best_value"]
        assert rerun["config"] == res["config"]
    # a killed run: its journal holds 2 of 3 batches and no result; --out alone resumes it to the same end
    part = tmp_path / "part"
    assert main([*argv[:-3], "--out", str(part), "-q"]) == 0
    lines = (part / "journal.jsonl").read_text().splitlines()
    (part / "journal.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (part / "result.json").unlink()
    assert main(["run", "--out", str(part), "-q"]) == 0
    assert json.loads((part / "result.json").read_text())["best_code"] == res["best_code"]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    capsys.readouterr()
    assert main(["run", "--config", str(bad), "-q"]) != 0
    assert "bad.json is not valid JSON" in capsys.readouterr().err


def test_out_alone_and_a_damaged_run_json_name_the_file(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "none"), "-q"]) != 0
    assert "none/run.json not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text(json.dumps({"budget": "200", "seed": 0, "optimizer": {"name": "random"},
                                              "problem": {"name": "separable", "d": 4, "n": 8}}))
    assert main(["run", "--out", str(bad), "-q"]) != 0
    err = capsys.readouterr().err
    assert f"{bad / 'run.json'}: " in err and "budget" in err and "'200'" in err


def test_a_number_given_as_a_layer_name_says_how_to_quote_it(capsys):
    assert main(["run", "--generator", "vqvae-digits", "--target", "cnn-digits", "--target-param", "layer=5",
                 "--budget", "5", "-q"]) != 0
    assert """--target-param layer='"5"'""" in capsys.readouterr().err


def test_a_run_json_edited_to_a_larger_budget_is_saved_anew(tmp_path, capsys):
    """The run goes on to the new budget; before, the old finished result.json made the loop skip the final
    save, so stdout, result.json and the report gave three different answers."""
    out = tmp_path / "r"
    assert main(["run", "--problem", "separable", "--problem-param", "d=6", "--problem-param", "n=8",
                 "--optimizer", "random", "--budget", "40", "--batch-size", "10", "--seed", "1", "--out", str(out),
                 "-q"]) == 0
    cfg = json.loads((out / "run.json").read_text())
    cfg["budget"] = 60
    (out / "run.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["run", "--out", str(out), "-q"]) == 0
    assert "holds a finished run" not in capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "finished" and res["n_queries"] == 60 and res["config"]["budget"] == 60
    assert np.load(out / "history.npz")["values"].shape == (60,)


def test_a_refused_run_draws_no_bar_and_serves_no_view(tmp_path, capsys):
    """`mango run` on a folder of another run drew its progress bar and served a live view before the refusal;
    an accepted resume's bar now starts at the queries the journal holds."""
    import socket
    import urllib.request

    out = tmp_path / "r"
    cmd = ["run", "--problem", "separable", "--problem-param", "d=8", "--problem-param", "n=16",
           "--optimizer", "random", "--budget", "200", "--batch-size", "50", "--out", str(out)]
    assert main([*cmd, "--seed", "3", "-q"]) == 0
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main([*cmd, "--seed", "4", "--watch", str(port)]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "0/200" not in err and "watching" not in err, err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2)


def test_a_refused_compare_draws_no_bar_and_serves_no_view(tmp_path, capsys):
    """`mango compare` into a folder holding a grid with other settings drew its bar at 100 % (the finished
    runs' queries) and served a live view, then printed the refusal; both now wait for the grid's checks."""
    import socket
    import urllib.request

    def write(budget: int):
        cfg = tmp_path / f"c{budget}.toml"
        cfg.write_text(f'name = "c"\nbudget = {budget}\nseeds = [0]\nbatch_size = 10\nworkers = 1\n'
                       '[[problems]]\nname = "separable"\nd = 8\nn = 16\n[[optimizers]]\nname = "random"\n')
        return cfg

    out = tmp_path / "g"
    assert main(["compare", str(write(40)), "--out", str(out), "--no-report"]) == 0
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["compare", str(write(60)), "--out", str(out), "--no-report", "--watch", str(port)]) == 2
    captured = capsys.readouterr()
    assert "another config" in captured.err
    assert "1 runs" not in captured.err and "watching" not in captured.err + captured.out, captured.err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2)


def test_a_compare_with_a_failed_run_says_why_it_wrote_no_report(tmp_path, capsys, monkeypatch):
    """A grid with a failed run ended with "1 failed" and silently no report; it now says so and how to go on."""
    (tmp_path / "bad_net.py").write_text(
        "import torch\n"
        "class Bad(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError('the rig is unplugged')\n"
        "def make():\n"
        "    return Bad()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "c"\nbudget = 20\nseeds = [0]\nworkers = 1\n[[generators]]\nname = "vqvae-digits"\n'
                   '[[targets]]\nname = "torch-unit"\nlabel = "bad"\nmodel = "bad_net:make"\nobjective = "output:0"\n'
                   '[[targets]]\nname = "cnn-digits"\nlayer = "output"\nunits = [1]\n'
                   '[[optimizers]]\nname = "random"\n')
    assert main(["compare", str(cfg), "--out", str(tmp_path / "g")]) == 1
    out = capsys.readouterr().out
    assert "no report written: 1 run(s) failed" in out and f"mango report {tmp_path / 'g'}" in out, out
    assert main(["report", str(tmp_path / "g")]) == 0          # the run that failed is named as failed, not "yet"
    text = (tmp_path / "g" / "report" / "report.md").read_text()
    assert "2 runs: 1 finished, 1 failed before any result" in text and "without results yet" not in text


def test_a_bad_watch_value_is_refused_before_a_grid_writes_anything(tmp_path, capsys):
    """With the view started once a grid's checks pass, a bad --watch was refused only after the components were
    built and compare.json written."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "c"\nbudget = 20\nseeds = [0]\nworkers = 1\n[[problems]]\nname = "separable"\nd = 8\n'
                   'n = 16\n[[optimizers]]\nname = "random"\n')
    for bad, said in (("99999", "port must be an integer"), ("0.0.0.0:0", "without a token")):
        assert main(["compare", str(cfg), "--out", str(tmp_path / "g"), "--watch", bad]) == 2
        assert said in capsys.readouterr().err
        assert not (tmp_path / "g" / "compare.json").exists()
