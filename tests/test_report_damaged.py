"""`mango report` on damaged and partial run folders: a damaged run is skipped with a one-line warning
naming its file (not a traceback), a missing file is named, and no value is carried past the last query
a run reached."""
from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pytest

from mango.cli import main
from mango.compare import run_compare
from mango.config import RunConfig, run_config
from mango.report import load_traces, write_report

BUDGET = 40
OPTS = ["random", "discrete-one-plus-one"]
UNIT = "snn-digits-spiking1[3]"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished compare folder: 1 unit x 2 optimizers x 2 seeds, 40 queries each (a few seconds)."""
    out = tmp_path_factory.mktemp("damaged") / "cmp"
    cfg = {"name": "tiny", "budget": BUDGET, "seeds": [0, 1], "batch_size": 10, "workers": 1,
           "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking1", "units": [3]}],
           "optimizers": [{"name": o} for o in OPTS]}
    assert not run_compare(cfg, out, workers=1)["errors"]
    return out


def _copy(grid, tmp_path):
    dst = tmp_path / "cmp"
    shutil.copytree(grid, dst, ignore=shutil.ignore_patterns("report"))
    return dst


def _run(folder, opt, seed):
    return folder / "runs" / "snn-digits-spiking1-3" / opt / f"seed{seed}"


def _cut(run, n, status):
    """Make ``run`` look stopped after ``n`` queries with ``status`` (its history and result.json cut there)."""
    h = dict(np.load(run / "history.npz"))
    keep = h["query_index"] <= n
    np.savez(run / "history.npz", **{k: (v[keep] if v.shape == keep.shape else v) for k, v in h.items()})
    res = json.loads((run / "result.json").read_text())
    res.update(status=status, n_queries=n)
    (run / "result.json").write_text(json.dumps(res))


def _summary_rows(md):
    lines = md.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| unit | optimizer | seeds |"))
    header = [c.strip() for c in lines[head].strip("|").split("|")]
    rows = {}
    for ln in lines[head + 2:]:
        if not ln.startswith("| "):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[1]] = dict(zip(header, cells))
    return rows


DAMAGE = {
    "truncated result.json": ("result.json", lambda p: p.write_bytes(p.read_bytes()[:100]), "not valid JSON"),
    "empty result.json": ("result.json", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "result.json a list": ("result.json", lambda p: p.write_text("[]\n"), "holds a JSON list, not an object"),
    "truncated history.npz": ("history.npz", lambda p: p.write_bytes(p.read_bytes()[:300]),
                              "not a readable .npz archive"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_run_is_skipped_not_fatal(grid, tmp_path, caplog, kind):
    """One damaged run of four: the report is written from the other three, a one-line warning names the
    file and what is wrong, and the report counts and lists the skipped run."""
    name, damage, problem = DAMAGE[kind]
    folder = _copy(grid, tmp_path)
    bad = _run(folder, "random", 1)
    damage(bad / name)
    with caplog.at_level(logging.WARNING, logger="mango.report"):
        manifest, traces = load_traces(folder)
    assert len(traces) == 3 and [str(k.file) for k in manifest["skipped"]] == [str(bad / name)]
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and f"{bad / name}: {problem}" in warned[0] and "\n" not in warned[0]
    md = write_report(folder, gifs=False, html_page=False)[0].read_text()
    assert "4 runs: 3 finished, 1 skipped as damaged (see Skipped runs)." in md
    assert _summary_rows(md)["random"]["seeds"] == "1 (1 more skipped as damaged)"
    skipped = [ln for ln in md.split("### Skipped runs")[1].splitlines() if ln.startswith("| [")]
    assert len(skipped) == 1 and "random/seed1" in skipped[0] and f"| {name} | {problem}" in skipped[0]


def test_every_run_damaged_is_a_one_line_error(grid, tmp_path, capsys):
    """No usable run left: the CLI's one-line error (exit 2) names a damaged file, no traceback."""
    folder = _copy(grid, tmp_path)
    for opt in OPTS:
        for seed in (0, 1):
            (_run(folder, opt, seed) / "result.json").write_text("[]")
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"mango report: error: no run under {folder} has usable results: ")
    assert "result.json: holds a JSON list, not an object; and 3 more damaged runs" in err[0]


def test_a_missing_history_is_named(grid, tmp_path, capsys):
    """A run folder with result.json but no history.npz: the error names history.npz, not result.json."""
    run = tmp_path / "one"
    shutil.copytree(_run(grid, "random", 0), run)
    (run / "history.npz").unlink()
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no result.json" not in err
    assert err == (f"mango report: error: no run under {run} has usable results: {run / 'history.npz'}: "
                   f"missing, though {run / 'result.json'} is there")


def test_partial_runs_show_what_they_reached(grid, tmp_path):
    """Runs that stopped short of the budget (interrupted, running) have no value past their last query:
    'not reached' at 40, never in bold, no AUC; the seeds column and the Runs table name their status."""
    folder = _copy(grid, tmp_path)
    _cut(_run(folder, "discrete-one-plus-one", 0), 20, "interrupted")
    _cut(_run(folder, "discrete-one-plus-one", 1), 30, "paused")   # a status the report does not know
    md = write_report(folder, gifs=False, html_page=False)[0].read_text()
    rows = _summary_rows(md)
    opo, rnd = rows["discrete-one-plus-one"], rows["random"]
    assert opo["seeds"] == "2 (2 partial: interrupted, paused)"
    assert opo[f"best @ {BUDGET} (median [IQR])"] == "not reached (stopped at 20-30)"
    assert opo["best @ 12 (median [IQR])"].startswith("0.")               # both got past 12 queries
    assert opo["AUC"] == "-"
    assert rnd[f"best @ {BUDGET} (median [IQR])"].startswith("**")       # the only full row is the best
    assert "4 runs: 2 finished, 1 interrupted, 1 paused (results so far)." in md
    runs = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| [")}
    opo_runs = [ln for k, ln in runs.items() if "discrete-one-plus-one" in k]
    assert sorted(ln.split("|")[5].strip() for ln in opo_runs) == ["interrupted", "paused"]
    assert sorted(ln.split("|")[8].strip() for ln in opo_runs) == [f"20 / {BUDGET}", f"30 / {BUDGET}"]
    assert "None: without the 2 partial runs (see Runs)" in md       # no win rates of a 20-query run
    _, traces = load_traces(folder)
    part = {t.seed: t for t in traces if t.optimizer == "discrete-one-plus-one"}
    assert [(part[s].extra["status"], part[s].reached, part[s].partial) for s in (0, 1)] == [
        ("interrupted", 20, True), ("paused", 30, True)]


def test_budgets_above_the_run_budget_are_left_out(grid, tmp_path):
    """A config's `budgets` above the runs' budget: no "best @ 1500" column carrying the value at 40."""
    folder = _copy(grid, tmp_path)
    manifest = json.loads((folder / "compare.json").read_text())
    manifest["budgets"] = [10, BUDGET, 1500]
    (folder / "compare.json").write_text(json.dumps(manifest))
    md = write_report(folder, gifs=False, html_page=False)[0].read_text()
    assert "best @ 1500" not in md and f"best @ {BUDGET} (median [IQR])" in md and "best @ 10 (" in md
    assert "left out of the table (1500)" in md


def test_a_really_interrupted_run(tmp_path):
    """A run stopped by Ctrl-C after 20 of 60 queries (its folder as the live writer leaves it): reported
    as interrupted, with nothing shown at 60 queries."""
    out = tmp_path / "run"
    cfg = {"generator": {"name": "vqvae-digits"}, "target": {"name": "snn-digits", "layer": "spiking1", "unit": 3},
           "optimizer": {"name": "random"}, "seed": 0, "budget": 60, "batch_size": 10}

    def ctrl_c(ev):
        if ev.n_queries >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_config(RunConfig.from_dict(cfg), out, callbacks=[ctrl_c])
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"
    md = write_report(out, gifs=False, html_page=False)[0].read_text()
    row = _summary_rows(md)["random"]
    assert row["seeds"] == "1 (1 partial: interrupted)"
    (t,) = load_traces(out)[1]
    assert t.extra["status"] == "interrupted" and t.partial and 0 < t.reached <= 20    # its last live write
    assert row["best @ 60 (median [IQR])"] == f"not reached (stopped at {t.reached})"
    assert row["AUC"] == "-"
    assert "1 run: 1 interrupted (results so far)." in md
    assert f"| interrupted | {t.best:.4g} (rate) |" in md and f"| {t.reached} / 60 |" in md
