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
    assert "status" not in final and "finished" in final and final["n_queries"] == res.n_queries
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
