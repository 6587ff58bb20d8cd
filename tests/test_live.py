"""Live run artifacts (mango.live): best.png, history.npz and a "running" result.json written at
improvements, atomically, while the run goes; `mango report` on a running folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mango.config import RunConfig, build_objective, run_config
from mango.live import RUNNING, LiveArtifacts
from mango.loop import maximize
from mango.report import load_traces, write_report

CFG = {"generator": {"name": "sngan-digits"}, "target": {"name": "cnn-digits", "unit": 3}, "budget": 120,
       "batch_size": 10, "optimizer": {"name": "random"}, "seed": 0}


def test_artifacts_appear_and_update_during_the_run(tmp_path):
    folder = tmp_path / "live"
    cfg = RunConfig.from_dict(CFG)
    writer = LiveArtifacts(folder, cfg.to_dict(), max_share=1.0)  # every improvement written
    seen = []

    def spy(ev):  # runs after the writer: the files of this batch are there
        res = json.loads((folder / "result.json").read_text())
        with np.load(folder / "history.npz") as h:
            n = len(h["values"])
            best_hist = float(h["values"].max())
        seen.append((ev.n_queries, ev.improved, res["status"], res["best_value"], res["n_queries"], n, best_hist,
                     (folder / "best.png").read_bytes()))

    res = maximize(build_objective(cfg), "random", cfg.budget, 0, batch_size=10, config=cfg.to_dict(),
                   callbacks=[writer, spy])
    assert all(s[2] == RUNNING for s in seen)
    improved = [s for s in seen if s[1]]
    assert len(improved) >= 2 and writer.writes == len(improved)
    for q, _, _, best, nq, n, best_hist, _ in improved:  # each write is the state of its batch
        assert nq == q == n and best == pytest.approx(best_hist)
    assert len({s[7] for s in improved}) >= 2  # best.png changed with the best
    assert seen[-1][3] == pytest.approx(res.best_value)
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_run_folder_is_live_and_finished_result_wins(tmp_path):
    """Through run_config (as `mango run --out`): a running result.json mid-run, report works on a copy of
    the running folder, and the end-of-run save leaves the finished result.json."""
    out = tmp_path / "run"
    snap = tmp_path / "snapshot"

    def cb(ev):
        if not snap.exists() and (out / "result.json").exists() and ev.n_queries < CFG["budget"]:
            shutil.copytree(out, snap)

    res = run_config(RunConfig.from_dict(CFG), out, callbacks=[cb])
    assert json.loads((snap / "result.json").read_text())["status"] == RUNNING
    assert (snap / "best.png").exists() and (snap / "history.npz").exists()
    final = json.loads((out / "result.json").read_text())
    assert final["status"] == "finished" and "finished" in final and final["n_queries"] == res.n_queries
    # report of the running folder: its results so far, marked running
    _, traces = load_traces(snap)
    assert len(traces) == 1 and traces[0].extra["status"] == "running"
    assert traces[0].n_queries < CFG["budget"]
    md = write_report(snap, gifs=False)[0].read_text()
    assert "still running" in md and "| running |" in md


def test_throttle_keeps_writes_under_the_share(tmp_path):
    """max_share=0: only the first improvement is written however often the run improves."""
    from mango.objective import FunctionObjective
    from mango.spaces import CodebookSpace

    calls = iter(range(10**6))  # every batch beats the last: an improvement at each batch
    obj = FunctionObjective(lambda I: np.full(len(I), float(next(calls))), CodebookSpace(8, 16), cache=False)
    writer = LiveArtifacts(tmp_path / "t", {"budget": 400}, max_share=0.0)
    ups = []
    maximize(obj, "random", 400, 0, batch_size=5, callbacks=[writer, lambda ev: ups.append(ev.improved)])
    assert sum(ups) == len(ups) == 80 and writer.writes == 1
    assert json.loads((tmp_path / "t" / "result.json").read_text())["n_queries"] == 5
    with pytest.raises(ValueError, match="max_share"):
        LiveArtifacts(tmp_path, max_share=2)


# -- issue 14 item 8: a progress bar over all queries of a compare/scan grid ---------------------------
def _row(k, external=0):
    return json.dumps({"batch": 0, "I": [[0]] * k, "y": [0.0] * k, "t": 0.0, "time": 0.0,
                       "external": external}) + "\n"


def test_grid_progress_follows_the_journals(tmp_path, capsys):
    from types import SimpleNamespace

    from mango.clitools import GridProgress

    specs = [SimpleNamespace(id=f"r{i}", unit="u", optimizer="random", seed=i) for i in range(2)]
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        f.mkdir()
    with GridProgress([(s, f, 100) for s, f in zip(specs, folders)], interval=60) as bar:
        assert bar.total == 200 and bar.poll() == 0
        (folders[0] / "journal.jsonl").write_text(_row(10) + _row(10, external=5))
        assert bar.poll() == 25
        with open(folders[0] / "journal.jsonl", "a") as fh:
            fh.write(_row(10)[:-9])  # a torn last line is not counted until complete
        assert bar.poll() == 25
        (folders[1] / "journal.jsonl").write_text(_row(30))
        assert bar.poll() == 55 and bar.bar.n == 55
        bar(specs[1], "done", {"best_value": 1.5, "wall": 2.0})  # a finished run counts its whole budget
        assert bar.bar.n == 125
        bar(specs[0], "done", {"best_value": 1.0, "wall": 1.7, "seconds": 0.35})   # set-up time said apart
    out, err = capsys.readouterr()
    assert "[1/2] u | random | seed 1: best 1.5 in 2.0 s\n" in out
    assert ("[2/2] u | random | seed 0: best 1 in 1.7 s (0.3 s searching, as the report counts it; the rest is "
            "loading models and writing files)") in out, out
    assert "2 runs" in err and "/200" in err and "q/s" in err  # the bar: total, count, rate (and ETA)


def test_compare_shows_one_bar_over_the_grid(tmp_path, capsys):
    from mango.cli import main

    (tmp_path / "c.toml").write_text('name = "t"\nbudget = 30\nbatch_size = 10\nseeds = [0, 1]\n'
                                     'problems = [{name = "separable", d = 4, n = 8}]\noptimizers = ["random"]\n')
    assert main(["compare", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"), "--workers", "1",
                 "--no-report"]) == 0
    out, err = capsys.readouterr()
    assert "[2/2]" in out and "2 runs: 100%" in err.replace("\r", "\n") and "60/60" in err
