"""`mango compare` / `mango scan`: grid expansion, resume-skip, local vs Ray identity."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mango.compare import expand, is_finished, run_compare
from mango.errors import ConfigError
from mango.scan import parse_units, run_scan, scan_config

TINY = {
    "name": "tiny",
    "budget": 60,
    "seeds": [0, 1],
    "batch_size": 20,
    "problems": [{"name": "separable", "d": 8, "n": 16},
                 {"name": "separable", "d": 8, "n": 16, "seed": 1, "label": "sep1"}],
    "optimizers": [{"name": "random"}, {"name": "ga"}, {"name": "random", "label": "random-b10", "batch_size": 10}],
}


def _values(out: Path) -> dict[str, np.ndarray]:
    man = json.loads((out / "compare.json").read_text())
    return {r["id"]: np.load(out / r["folder"] / "history.npz")["values"] for r in man["runs"]}


def test_expand_grid():
    runs = expand(TINY)
    assert len(runs) == 2 * 3 * 2
    assert {r.unit for r in runs} == {"separable(d=8,n=16)", "sep1"}
    assert {r.optimizer for r in runs} == {"random", "ga", "random-b10"}
    b10 = [r for r in runs if r.optimizer == "random-b10"]
    assert all(r.config["batch_size"] == 10 and r.config["optimizer"] == {"name": "random"} for r in b10)
    assert len({r.folder for r in runs}) == len(runs)
    t = expand({"budget": 10, "generators": [{"name": "vqvae-digits"}], "optimizers": ["random"],
                "targets": [{"name": "snn-digits", "layer": "spiking1", "units": [0, 5, 7]}], "seeds": 2})
    assert [r.config["target"]["unit"] for r in t] == [0, 0, 5, 5, 7, 7]
    assert t[0].unit == "snn-digits-spiking1[0]" and t[1].seed == 1


@pytest.mark.parametrize("bad, match", [
    ({**TINY, "seed": 3}, "unknown compare config key 'seed'"),
    ({**TINY, "optimizers": [{"name": "protez"}]}, "protez.*protes"),
    ({**TINY, "optimizers": [{"name": "random"}, {"name": "random"}]}, "duplicate optimizer labels"),
    ({**TINY, "seeds": []}, "seeds"),
    ({k: v for k, v in TINY.items() if k != "budget"}, "budget"),
])
def test_expand_errors_name_the_bad_value(bad, match):
    with pytest.raises(ConfigError, match=match):
        expand(bad)


def test_resume_skips_finished_and_resumes_interrupted(tmp_path):
    out = tmp_path / "cmp"
    s1 = run_compare(TINY, out, workers=1)
    assert len(s1["ran"]) == 12 and not s1["skipped"] and not s1["errors"]
    before = _values(out)
    runs = expand(TINY)
    mtimes = {r.id: os.path.getmtime(out / r.folder / "result.json") for r in runs}

    s2 = run_compare(TINY, out, workers=1)
    assert s2["ran"] == [] and len(s2["skipped"]) == 12
    assert all(os.path.getmtime(out / r.folder / "result.json") == mtimes[r.id] for r in runs)

    # an interrupted run: result missing, journal cut to its first batch -> only it runs, from the journal
    victim = runs[4]
    folder = out / victim.folder
    (folder / "result.json").unlink()
    lines = (folder / "journal.jsonl").read_text().splitlines(keepends=True)
    (folder / "journal.jsonl").write_text(lines[0])
    (folder / "checkpoint.npz").unlink(missing_ok=True)
    assert not is_finished(victim.config, folder)
    s3 = run_compare(TINY, out, workers=1)
    assert s3["ran"] == [victim.id] and len(s3["skipped"]) == 11
    np.testing.assert_array_equal(_values(out)[victim.id], before[victim.id])
    assert len((folder / "journal.jsonl").read_text().splitlines()) == len(lines)

    # another budget is another config: nothing counts as finished
    assert not is_finished({**victim.config, "budget": 61}, folder)


def test_local_processes_give_the_same_results_as_in_process(tmp_path):
    cfg = {**TINY, "problems": TINY["problems"][:1], "optimizers": [{"name": "ga"}, {"name": "random"}]}
    run_compare(cfg, tmp_path / "a", workers=1)
    s = run_compare(cfg, tmp_path / "b", workers=2)
    assert s["backend"] == "local:2" and len(s["ran"]) == 4
    a, b = _values(tmp_path / "a"), _values(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ray_gives_the_same_results_as_local(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mango-am[ray]')")
    cfg = {**TINY, "problems": TINY["problems"][:1], "optimizers": [{"name": "ga"}, {"name": "random"}]}
    run_compare(cfg, tmp_path / "local", workers=1)
    try:
        s = run_compare(cfg, tmp_path / "ray", ray={"address": "local", "num_cpus": 2})
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert s["backend"] == "ray" and len(s["ran"]) == 4 and not s["errors"]
    a, b = _values(tmp_path / "local"), _values(tmp_path / "ray")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # and the Ray path skips finished runs too
    s2 = run_compare(cfg, tmp_path / "ray", ray={"address": "local", "num_cpus": 2})
    assert s2["ran"] == [] and len(s2["skipped"]) == 4


def test_parse_units():
    assert parse_units("0-3,7", 10) == [0, 1, 2, 3, 7]
    assert parse_units("all", 4) == [0, 1, 2, 3]
    assert parse_units([2, 2, 1]) == [2, 1]
    with pytest.raises(ConfigError, match=r"outside.*valid: 0..3"):
        parse_units("2-5", 4)
    with pytest.raises(ConfigError, match="bad units"):
        parse_units("a-b")
    with pytest.raises(ConfigError, match=r"units '3-1' is a range from 3 down to 1.*ranges go up: 1-3"):
        parse_units("0,3-1", 10)          # said "selects no unit" (or silently kept 0) without the way out


def test_scan_runs_every_unit_and_skips_finished(tmp_path):
    scan = {"generator": "vqvae-digits", "target": {"name": "snn-digits", "T": 4}, "layer": "spiking_out",
            "units": "all", "optimizer": "random", "budget": 20, "batch_size": 10, "workers": 1}
    cfg = scan_config(scan)
    assert cfg["targets"][0]["units"] == list(range(10))  # sized from the target's layer listing
    scan["units"] = "0-3"
    s1 = run_scan(scan, tmp_path / "scan", report=False)
    assert len(s1["ran"]) == 4 and [r["unit"] for r in s1["table"]] == [0, 1, 2, 3]
    s2 = run_scan(scan, tmp_path / "scan", report=False)
    assert s2["ran"] == [] and len(s2["skipped"]) == 4
    with pytest.raises(ConfigError, match="nope.*valid"):
        scan_config({**scan, "layer": "nope", "units": "all"})


def test_scan_cli_with_a_config_naming_the_target_by_string(tmp_path, monkeypatch, capsys):
    """`mango scan --config X.toml` with `target = "name"` and no out: default folder under runs/."""
    from mango.cli import main

    (tmp_path / "scan.toml").write_text(
        'generator = "vqvae-digits"\ntarget = "snn-digits"\nlayer = "spiking_out"\nunits = "0-1"\n'
        'optimizer = "random"\nbudget = 10\nbatch_size = 10\n')
    monkeypatch.chdir(tmp_path)
    assert main(["scan", "--config", "scan.toml", "--workers", "1"]) == 0
    out = tmp_path / "runs" / "scan-snn-digits-spiking_out"
    assert sorted(p.name for p in (out / "runs").iterdir())
    assert "unit" in capsys.readouterr().out


def test_scan_takes_no_report_and_local_as_compare_does(tmp_path, monkeypatch, capsys):
    """`mango scan` refused --no-report and --local ('unrecognized arguments'), which compare takes."""
    from mango.cli import main

    (tmp_path / "scan.toml").write_text(
        'generator = "vqvae-digits"\ntarget = "snn-digits"\nlayer = "spiking_out"\nunits = "0-1"\n'
        'optimizer = "random"\nbudget = 10\nbatch_size = 10\n[ray]\naddress = "ray://nowhere:1"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["scan", "--config", "scan.toml", "--workers", "1", "--local", "--no-report", "--out", "s"]) == 0
    assert len(list((tmp_path / "s" / "runs").iterdir())) == 2             # ran locally, not on the [ray] address
    assert not (tmp_path / "s" / "report").exists() and "report:" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["parent-sigterm", "group-sigint", "group-sigterm"])
def test_sigterm_to_a_compare_stops_its_workers_and_marks_its_runs(tmp_path, how):
    """SIGTERM to the parent alone (a scheduler's stop) left the worker processes running, reparented to
    init, finishing their runs and holding the caller's pipes; a Ctrl-C to the parent alone waited for
    every queued run. Now the grid stops: workers gone, queued runs not started, the runs in progress
    marked interrupted (their journals resume them), exit code 143. A Ctrl-C or SIGTERM to the whole
    process group does the same (a second SIGINT from the parent used to hit the workers mid-write)."""
    import signal
    import subprocess
    import sys
    import time

    cfg = {"name": "long", "budget": 100_000_000, "seeds": [0, 1, 2], "batch_size": 10, "workers": 2,
           "problems": [{"name": "separable", "d": 8, "n": 16}], "optimizers": [{"name": "random"}]}
    (tmp_path / "c.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in cfg.items()
                                               if not isinstance(v, list) or not isinstance(v[0], dict))
                                     + '\n[[problems]]\nname = "separable"\nd = 8\nn = 16\n'
                                     + '[[optimizers]]\nname = "random"\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mango.cli", "compare", str(tmp_path / "c.toml"), "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    journals: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        journals = [p for p in out.glob("runs/*/*/*/journal.jsonl") if len(p.read_text().splitlines()) >= 3]
        if len(journals) == 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(journals) == 2, proc.communicate()
    if how == "parent-sigterm":
        os.kill(proc.pid, signal.SIGTERM)                 # the parent alone, not its process group
    else:                                                 # a terminal's Ctrl-C, a scheduler's stop of the job
        os.killpg(proc.pid, signal.SIGINT if how == "group-sigint" else signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == "group-sigint" else 143), err
    assert "Traceback" not in err and "rerun the same command to go on" in err, err
    end = time.monotonic() + 15       # the resource tracker ends on its own once the parent is gone
    while True:
        left = subprocess.run(["pgrep", "-a", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        if not left or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert left == "", f"processes outlived the compare: {left}"
    started = sorted(out.glob("runs/*/*/*/journal.jsonl"))
    assert len(started) == 2                              # the third seed was queued, never started
    for j in started:
        res = json.loads((j.parent / "result.json").read_text())
        assert res["status"] == "interrupted"


def test_a_typo_in_a_units_range_is_refused_without_building_it():
    """'0-100000000' built the whole list (7.8 GB, 33 s) and printed every bad unit (about 1 GB of text)."""
    with pytest.raises(ConfigError, match=r"units '0-100000000' select 100000001 units; a scan takes at most"):
        parse_units("0-100000000")
    with pytest.raises(ConfigError, match=r"units '5-100000' reach outside the layer's 10 units \(valid: 0\.\.9\)"):
        parse_units("5-100000", size=10)
    with pytest.raises(ConfigError) as err:
        parse_units(list(range(5, 5000)), size=10)
    assert len(str(err.value)) < 200 and "(4990 in all)" in str(err.value)


def test_a_bad_component_fails_the_grid_before_any_run(tmp_path):
    """A bad optimizer value in the second [[optimizers]] entry failed only when its runs came up, after the
    first entry's runs had used their time; a budgets entry above the budget gave report columns no run
    reached. Both now end the grid before any run folder is made."""
    bad = {**TINY, "optimizers": [{"name": "random"}, {"name": "ga", "label": "ga-bad", "n_elite": -3}]}
    with pytest.raises(ConfigError, match="n_elite"):
        run_compare(bad, tmp_path / "a", workers=1)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match=r"budgets entry 4000 is above the runs' budget 60"):
        run_compare({**TINY, "budgets": [20, 4000]}, tmp_path / "b", workers=1)
    assert not (tmp_path / "b").exists()


def test_a_grid_rerun_with_other_settings_leaves_the_folder_as_it_was(tmp_path):
    """A scan re-run with another budget failed run by run after compare.json had been rewritten with the new
    budget, so its finished runs were reported as 'stopped early' from then on."""
    out = tmp_path / "g"
    run_compare(TINY, out, workers=1)
    before = (out / "compare.json").read_bytes()
    with pytest.raises(ConfigError, match=r"was started with another config \(differs in: budget \d+ -> \d+\).*use a new output"):
        run_compare({**TINY, "budget": 80}, out, workers=1)
    assert (out / "compare.json").read_bytes() == before


def test_adding_a_generator_keeps_the_finished_runs(tmp_path, caplog):
    """A unit's label gains a 'generator:' prefix once a grid has two generators: adding one to a finished grid
    ran every finished run again in a new folder (the old ones orphaned). They are now taken over."""
    one = {"name": "g", "budget": 20, "seeds": [0], "batch_size": 10, "workers": 1,
           "generators": [{"name": "vqvae-digits"}], "targets": [{"name": "cnn-digits", "layer": "output", "units": [1]}],
           "optimizers": [{"name": "random"}]}
    out = tmp_path / "g"
    first = run_compare(one, out, workers=1)
    assert len(first["ran"]) == 1
    before = _values(out)
    two = {**one, "generators": [{"name": "vqvae-digits"}, {"name": "sngan-digits"}]}
    with caplog.at_level("WARNING", logger="mango.compare"):
        second = run_compare(two, out, workers=1)
    assert len(second["skipped"]) == 1 and len(second["ran"]) == 1          # only the new generator's run
    assert "under its earlier label: moved to" in caplog.text
    after = _values(out)
    (old_id,) = before
    assert np.array_equal(after[f"vqvae-digits:{old_id.split('|', 1)[0]}|{old_id.split('|', 1)[1]}"], before[old_id])
    assert not (out / "runs" / "output-1").exists()                      # nothing orphaned


def test_a_bad_unit_among_good_ones_is_refused_before_any_run(tmp_path):
    """units = [1, 99, 2] ran units 1 and 2 and failed 99 at its own turn (scan checked its units first)."""
    cfg = {"name": "u", "budget": 20, "seeds": [0], "workers": 1, "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking_out", "units": [1, 99, 2]}],
           "optimizers": [{"name": "random"}]}
    with pytest.raises(ConfigError, match=r"unit 99 is out of range for layer 'spiking_out' of target 'snn-digits': "
                                          r"valid units 0..9"):
        run_compare(cfg, tmp_path / "u", workers=1)
    assert not (tmp_path / "u").exists()


def test_another_grid_in_the_same_folder_is_refused_and_an_extended_one_goes_on(tmp_path):
    """A second grid given the same --out replaced compare.json: the first grid's finished runs dropped out of
    the report ("no run under OUT has results yet"). Now it is refused; a grid extended with more seeds goes on."""
    one = {"name": "a", "budget": 20, "seeds": [0], "workers": 1, "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking_out", "units": [1]}],
           "optimizers": [{"name": "random"}]}
    out = tmp_path / "out"
    run_compare(one, out, workers=1)
    manifest = (out / "compare.json").read_text()
    other = {**one, "name": "b", "optimizers": [{"name": "elite"}]}
    with pytest.raises(ConfigError, match=r"holds the grid 'a' \(1 runs\), and this grid leaves out 1 of them"):
        run_compare(other, out, workers=1)
    assert (out / "compare.json").read_text() == manifest
    more = run_compare({**one, "seeds": [0, 1]}, out, workers=1)
    assert len(more["skipped"]) == 1 and len(more["ran"]) == 1


def test_a_finished_run_with_a_damaged_history_is_rebuilt_by_the_rerun(tmp_path):
    """A truncated history.npz in a finished run: the rerun said "finished before, skipped" and the report left
    the run out for good. Now the rerun replays its journal (nothing evaluated again) and writes it anew."""
    cfg = {"name": "h", "budget": 20, "seeds": [0], "workers": 1, "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking_out", "units": [1]}],
           "optimizers": [{"name": "random"}]}
    out = tmp_path / "out"
    run_compare(cfg, out, workers=1)
    (hist,) = out.glob("runs/*/*/*/history.npz")
    good = np.load(hist)["values"].copy()
    hist.write_bytes(hist.read_bytes()[:40])
    again = run_compare(cfg, out, workers=1)
    assert again["ran"] and not again["skipped"]
    np.testing.assert_array_equal(np.load(hist)["values"], good)
    assert run_compare(cfg, out, workers=1)["skipped"]           # and is finished again


def test_gradient_on_a_pipeline_it_cannot_differentiate_is_refused_before_any_run(tmp_path):
    """A grid of random and gradient on a Poisson-encoded SNN ran both random runs, then failed each gradient
    run with "target SpikingTarget is not differentiable" and wrote no report."""
    cfg = {"name": "g", "budget": 20, "seeds": [0], "workers": 1, "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking_out", "units": [1], "encoding": "poisson"}],
           "optimizers": [{"name": "random"}, {"name": "gradient"}]}
    with pytest.raises(ConfigError, match=r"optimizer 'gradient' cannot run on generator .*vqvae-digits.*, target "
                                          r".*\"encoding\": \"poisson\".*is not differentiable.*checked before any starts"):
        run_compare(cfg, tmp_path / "g", workers=1)
    assert not (tmp_path / "g").exists()


def test_a_component_registered_in_this_process_is_refused_for_worker_processes(tmp_path, monkeypatch, caplog):
    """Worker processes of a notebook (no script file) start without what it registered with
    mango.registry.register: every run used to fail with "unknown generator"; now the grid is refused before
    anything is written. A script's workers re-import it, so there a warning says where to register."""
    import logging
    import sys

    from mango import registry
    from mango.compare import _check_reachable, expand, run_compare

    registry.register("generator", "test-inproc-gen", lambda device="cpu": registry.create("generator", "vqvae-digits"),
                      overwrite=True)
    cfg = {"budget": 10, "seeds": [0], "generators": [{"name": "test-inproc-gen"}],
           "targets": [{"name": "cnn-digits", "layer": "output", "units": [1]}], "optimizers": [{"name": "random"}]}
    try:
        with monkeypatch.context() as m:
            m.delattr(sys.modules["__main__"], "__file__", raising=False)      # as in a notebook
            with pytest.raises(ConfigError, match=r"generator 'test-inproc-gen' was registered in this process"
                                                  r".*workers = 1"):
                run_compare(cfg, tmp_path / "grid", workers=2)
        assert not (tmp_path / "grid").exists()
        with pytest.raises(ConfigError, match="Ray cluster"):
            _check_reachable([r.run for r in expand(cfg)], True, 2)
        with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="mango.compare"):
            m.setattr(sys.modules["__main__"], "__file__", "/somewhere/grid.py", raising=False)
            _check_reachable([r.run for r in expand(cfg)], False, 2)
        assert "re-import /somewhere/grid.py" in caplog.text and "top level" in caplog.text
        assert run_compare(cfg, tmp_path / "grid", workers=1)["errors"] == {}
    finally:
        registry._REG["generator"].pop("test-inproc-gen", None)       # other tests list the registry


def test_a_workers_sigterm_handler_does_not_wait_for_the_grids_shared_lock():
    """A SIGTERM to a grid's process group hung the whole grid (seen once in CI): the worker's handler called
    the shared event's set() while its main thread, interrupted inside stop.is_set(), held that event's
    non-reentrant lock. The handler now only sets a flag of the worker's own."""
    import multiprocessing as mp
    import signal
    import threading
    import time

    import mango.compare as compare

    ev = mp.get_context("spawn").Event()
    saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), compare._STOP, compare._TERMINATED)
    try:
        compare._init_worker(ev)
        handler = signal.getsignal(signal.SIGTERM)
        ev._cond.acquire()                              # where is_set() holds it when the signal comes
        rescue = threading.Timer(5.0, ev._cond.release)  # the old handler would wait here for ever
        rescue.start()
        t0 = time.monotonic()
        handler(signal.SIGTERM, None)
        took = time.monotonic() - t0
        rescued = not rescue.is_alive()
        rescue.cancel()
        if not rescued:
            ev._cond.release()
        assert took < 1.0, f"the handler waited {took:.1f} s for the event's lock"
        assert compare._stopped() and not ev.is_set()
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        compare._STOP, compare._TERMINATED = saved[2], saved[3]


def test_a_grid_that_spells_out_a_default_skips_its_finished_runs(tmp_path):
    """`batch_size = 10` under `random` (its default) made a finished grid run again, and the rerun rewrote
    result.json with the spelled config, after which the unspelled grid ran again too."""
    base = {"name": "s", "budget": 40, "seeds": [0], "workers": 1, "problems": [{"name": "separable", "d": 8, "n": 16}],
            "optimizers": [{"name": "random"}]}
    out = tmp_path / "g"
    assert run_compare(base, out, workers=1)["ran"]
    spelled = {**base, "optimizers": [{"name": "random", "batch_size": 10}]}
    assert run_compare(spelled, out, workers=1)["skipped"] and run_compare(base, out, workers=1)["skipped"]


def test_a_retry_clears_the_last_invocation_s_errors_before_it_runs(tmp_path):
    """compare_status.json is written when a grid ends: after a Ctrl-C'd retry the report still said the
    runs being retried had "failed before any result"."""
    base = {"name": "e", "budget": 20, "seeds": [0], "workers": 1, "problems": [{"name": "separable", "d": 8, "n": 16}],
            "optimizers": [{"name": "random"}]}
    out = tmp_path / "g"
    out.mkdir()
    (out / "compare_status.json").write_text(json.dumps({"errors": {expand(base)[0].id: "RuntimeError: boom"}}))

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(base, out, workers=1, on_open=interrupt)
    assert not (out / "compare_status.json").exists()
