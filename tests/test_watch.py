"""The live view (``mango watch``) over HTTP: state of run / rig / compare folders, torn lines, read-only, tokens.

Every test serves a hand-made folder with :func:`mango.watch.serve` (a real uvicorn server on a free
loopback port) and talks to it with the standard library's HTTP client.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from mango.errors import ConfigError  # noqa: E402
from mango.watch import add_arguments, main, serve, stop  # noqa: E402
from mango.watch.reader import FolderWatcher, expected_best_of_n  # noqa: E402


# -- folder fixtures (the formats mango.journal, mango.config and mango.rig.closedloop write) -----------------
def _row(batch: int, y: list[float], t: float, d: int = 4, external: int = 0, **extra) -> str:
    rec = {"batch": batch, "I": [[batch % 7] * d for _ in y], "y": y, "t": t, "time": time.time(), "external": external}
    rec.update(extra)
    return json.dumps(rec) + "\n"


def _write_run(folder: Path, batches: list[list[float]], budget: int = 100, optimizer: str = "protes") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"budget": budget, "seed": 0, "optimizer": {"name": optimizer},
           "generator": {"name": "vqvae-digits"}, "target": {"name": "snn-digits", "layer": "spiking_out", "unit": 3}}
    (folder / "run.json").write_text(json.dumps(cfg))
    with open(folder / "journal.jsonl", "w") as fh:
        for b, y in enumerate(batches):
            fh.write(_row(b, y, 0.5 * (b + 1)))


def _png(path: Path, value: int = 128) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, np.full((8, 8), value, dtype=np.uint8))


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder`` -> (sha256, mtime_ns)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _get(url: str, path: str = "api/state", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    base = url.split("?")[0]
    query = ("?" + url.split("?", 1)[1]) if "?" in url else ""
    if "?" in path:
        query = ""
    req = urllib.request.Request(base + path + query, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _state(url: str) -> dict:
    code, body = _get(url)
    assert code == 200, body
    return json.loads(body)


@pytest.fixture
def served():
    urls = []

    def _serve(folder, **kw):
        url = serve(folder, **kw)
        urls.append(url)
        return url

    yield _serve
    for u in urls:
        stop(u)


# -- single runs ----------------------------------------------------------------------------------------------------
def test_state_of_a_running_folder(tmp_path, served):
    run = tmp_path / "run"
    batches = [[0.1, 0.3, 0.2, 0.0, 0.1, 0.05, 0.2, 0.25, 0.15, 0.1], [0.4] + [0.0] * 9, [0.35] * 10]
    _write_run(run, batches, budget=100)
    url = served(run, render=False)
    assert url.startswith("http://127.0.0.1:")
    s = _state(url)
    assert s["kind"] == "run" and s["status"] == "running"
    assert s["n_queries"] == 30 and s["budget"] == 100 and s["batches"] == 3
    assert s["best"] == pytest.approx(0.4) and s["best_query"] == 11
    assert s["curve"]["x"][-1] == 30 and s["curve"]["y"][-1] == pytest.approx(0.4)
    assert s["curve"]["y"] == sorted(s["curve"]["y"])  # a running maximum
    assert s["objective"] == "vqvae-digits -> snn-digits [layer=spiking_out,unit=3]" and s["optimizer"] == "protes"
    # random-search baseline from the first batch: expected best of n draws from its 10 values
    bl = s["baseline"]
    assert "first batch" in bl["source"] and bl["m"] == 10
    assert bl["y"][0] == pytest.approx(np.mean(batches[0]))
    assert bl["x"][-1] == 100 and bl["y"][-1] == pytest.approx(0.3, abs=1e-3)
    assert s["qps_recent"] == pytest.approx(20 / 1.0)  # 20 queries between t=0.5 and t=1.5
    assert s["eta_s"] == pytest.approx(70 / 20)
    assert s["image"] is None  # no best.png yet (and no drawing): the page says "no image yet"
    assert s["reported"] is None
    # the loop writes best.png and a running result.json at an improvement
    _png(run / "best.png")
    (run / "result.json").write_text(json.dumps({"status": "running", "best_value": 0.4, "optimizer_seconds": 0.3,
                                                 "seconds": 1.5, "reported": {"name": "rate", "best": 0.5,
                                                                              "at_best_score": 0.5}}))
    s = _state(url)
    assert s["status"] == "running" and s["image"].startswith("files/best.png?v=")
    assert s["optimizer_share"] == pytest.approx(0.2)
    assert s["reported"] == {"name": "rate", "best": 0.5, "at_best_score": 0.5}
    code, body = _get(url, s["image"])
    assert code == 200 and body == (run / "best.png").read_bytes()


def test_images_drawn_from_the_journal(tmp_path, served):
    """Before best.png exists the best image is drawn from the journal's best code; the latest batch as a grid."""
    iio = pytest.importorskip("imageio.v3")
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"budget": 50, "optimizer": {"name": "protes"}, "generator": {"name": "vqvae-digits"},
           "target": {"name": "snn-digits"}}
    (run / "run.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 32, size=(2, 5, 16))
    with open(run / "journal.jsonl", "w") as fh:
        for b in range(2):
            y = [0.1, 0.2, 0.9 if b == 0 else 0.3, 0.0, 0.4]
            fh.write(json.dumps({"batch": b, "I": codes[b].tolist(), "y": y, "t": b + 1.0, "time": time.time(),
                                 "external": 0}) + "\n")
    before = _snapshot(tmp_path)
    url = served(run)
    s = _state(url)
    assert s["image"].startswith("render/best.png?run=.") and "best code" in s["image_source"]
    assert s["latest_batch"]["image"].startswith("render/latest.png")
    code, body = _get(url, s["image"])
    assert code == 200, body
    best = iio.imread(body)
    from mango import registry

    gen = registry.create("generator", "vqvae-digits", {})
    import torch

    with torch.no_grad():
        want = np.asarray(gen.to_uint8(gen(gen.space.decode(codes[0][2:3]))))[0, ..., 0]
    scale = best.shape[0] // want.shape[0]
    assert scale >= 1 and np.array_equal(best[::scale, ::scale], want)  # the code with y = 0.9
    code, body = _get(url, s["latest_batch"]["image"])
    assert code == 200 and iio.imread(body).shape[0] > best.shape[0] // 2  # a grid of 5 images (2 x 3)
    assert _snapshot(tmp_path) == before  # drawn in memory, nothing written
    # once the run writes best.png, that file is shown
    _png(run / "best.png")
    assert _state(url)["image"].startswith("files/best.png")
    # unless the run's throttled files are older than the journal's best (written at query 2, best at 3)
    (run / "result.json").write_text(json.dumps({"status": "running", "n_queries": 2, "best_value": 0.2}))
    s = _state(url)
    assert s["image"].startswith("render/best.png") and "best.png is from query 2" in s["image_source"]
    assert np.array_equal(iio.imread(_get(url, s["image"])[1]), best)


def test_throttled_files_older_than_the_journals_best_are_marked(tmp_path, served):
    """A user's trial: while a search ran, the page's rate line and best.png came from the throttled live
    files and belonged to an older best than the score and query shown (from the journal). Now the page says
    which query they are from (and, where it can draw, shows the journal's best image instead)."""
    run = tmp_path / "run"
    _write_run(run, [[0.1] * 10, [0.4] + [0.0] * 9, [0.35] * 10], budget=100)   # best 0.4 at query 11
    _png(run / "best.png")
    rep = {"name": "rate", "best": 0.2, "at_best_score": 0.2}
    (run / "result.json").write_text(json.dumps({"status": "running", "n_queries": 10, "best_value": 0.1,
                                                 "reported": rep}))
    url = served(run, render=False)
    s = _state(url)
    assert s["best_query"] == 11 and s["reported"] == {**rep, "as_of": 10}
    assert s["image"].startswith("files/best.png") and s["image_source"].startswith("best.png as of query 10")
    assert "at the best score as of query" in _get(url, "")[1].decode()
    (run / "result.json").write_text(json.dumps({"status": "running", "n_queries": 30, "best_value": 0.4,
                                                 "reported": rep}))
    s = _state(url)
    assert s["reported"] == rep and s["image_source"] == "best.png"


def test_finished_run_keeps_being_served(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1, 0.2], [0.5, 0.3]], budget=4)
    (run / "result.json").write_text(json.dumps({"best_value": 0.5, "n_queries": 4, "seconds": 2.0,
                                                 "optimizer_seconds": 0.5,
                                                 "reported": {"name": "rate", "best": 0.25, "at_best_score": 0.25}}))
    url = served(run)
    s = _state(url)
    assert s["status"] == "finished" and s["eta_s"] == 0.0 and s["n_queries"] == 4
    assert s["optimizer_share"] == pytest.approx(0.25) and s["reported"]["name"] == "rate"


def test_a_finished_silent_run_shows_its_closest_approach(tmp_path, served):
    """result.json's "approach" (a spiking unit's best image: spikes, late membrane peak against threshold and
    where) reaches the page's state once the run is finished, and the page has the line that shows it."""
    run = tmp_path / "run"
    _write_run(run, [[0.1, 0.2]], budget=2)
    near = {"spikes": 0, "late_peak": -1.52, "threshold": 1.0, "peak_over_threshold": -1.52, "position": [3, 0],
            "map": [5, 5]}
    (run / "result.json").write_text(json.dumps({"status": "running", "best_value": 0.2, "approach": near}))
    url = served(run)
    assert _state(url)["approach"] is None                # only a finished run's best image counts
    (run / "result.json").write_text(json.dumps({"best_value": 0.2, "n_queries": 2, "approach": near}))
    assert _state(url)["approach"] == near
    page = _get(url, "")[1].decode()
    assert 'id="approach"' in page and "closest approach: membrane peaked at" in page


def test_reported_values_in_the_journal(tmp_path, served):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"budget": 10, "optimizer": {"name": "protes"}}))
    with open(run / "journal.jsonl", "w") as fh:
        fh.write(_row(0, [0.2, 0.9], 1.0, extra={"reported": [0.1, 0.4], "reported_name": "rate"}))
    s = _state(served(run))
    assert s["reported"] == {"name": "rate", "best": 0.4, "at_best_score": 0.4}


def test_torn_last_line_is_skipped_not_cut(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1] * 5, [0.2] * 5])
    full = _row(2, [0.9] * 5, 1.5)
    with open(run / "journal.jsonl", "a") as fh:
        fh.write(full[:17])  # a kill in the middle of a write
    before = (run / "journal.jsonl").read_bytes()
    url = served(run)
    s = _state(url)
    assert s["n_queries"] == 10 and s["best"] == pytest.approx(0.2) and s["torn_bytes"] == 17
    assert (run / "journal.jsonl").read_bytes() == before  # not truncated
    # the writer completes the line: the rest is read incrementally
    with open(run / "journal.jsonl", "a") as fh:
        fh.write(full[17:])
    s = _state(url)
    assert s["n_queries"] == 15 and s["best"] == pytest.approx(0.9) and s["torn_bytes"] == 0


def test_crash_and_resume_are_followed(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1] * 5, [0.2] * 5])
    with open(run / "journal.jsonl", "a") as fh:
        fh.write('{"batch": 2, "I": [[1')  # crash
    url = served(run)
    assert _state(url)["n_queries"] == 10
    # the resumed run cuts the torn line (the file shrinks) and appends the batch again, then more
    raw = (run / "journal.jsonl").read_bytes()
    (run / "journal.jsonl").write_bytes(raw[: raw.rfind(b"\n") + 1])
    assert _state(url)["n_queries"] == 10
    with open(run / "journal.jsonl", "a") as fh:
        fh.write(_row(2, [0.7] * 5, 1.6))
        fh.write(_row(3, [0.3] * 5, 2.1))
    s = _state(url)
    assert s["n_queries"] == 20 and s["best"] == pytest.approx(0.7) and s["batches"] == 4
    # a run folder deleted and started again from scratch (another file) is read from the start
    (run / "journal.jsonl").unlink()
    with open(run / "journal.jsonl", "w") as fh:
        fh.write(_row(0, [0.05] * 3, 0.2))
    s = _state(url)
    assert s["n_queries"] == 3 and s["best"] == pytest.approx(0.05)


def test_stalled_run(tmp_path):
    run = tmp_path / "run"
    _write_run(run, [[0.1] * 5])
    old = time.time() - 3600
    for p in run.iterdir():
        os.utime(p, (old, old))
    s = FolderWatcher(run).state()
    assert s["status"] == "stalled" and s["eta_s"] is None


def test_folder_is_byte_identical_after_watching(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1, 0.4], [0.2, 0.3]])
    with open(run / "journal.jsonl", "a") as fh:
        fh.write('{"batch": 2, "I"')
    _png(run / "best.png")
    (run / "result.json").write_text(json.dumps({"status": "running", "best_value": 0.4}))
    before = _snapshot(tmp_path)
    url = served(run)
    for path in ("", "api/state", "files/best.png", "files/../run/run.json", "favicon.ico"):
        _get(url, path)
    _read_events(url, 1, timeout=5)
    time.sleep(0.2)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in run.iterdir()) == ["best.png", "journal.jsonl", "result.json", "run.json"]


def test_only_pngs_inside_the_folder_are_served(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1]])
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    url = served(run)
    assert _get(url, "files/run.json")[0] == 404
    assert _get(url, "files/..%2Fsecret.png")[0] in (403, 404)
    assert _get(url, "files/missing.png")[0] == 404


# -- server-sent events ------------------------------------------------------------------------------------------
def _read_events(url: str, count: int, timeout: float = 10.0, action=None) -> list[dict]:
    """Read ``count`` state events from /events (calling ``action()`` after the first)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn.request("GET", "/events" + (f"?{parts.query}" if parts.query else ""))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events: list[dict] = []
    data = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        line = resp.readline().decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            events.append(json.loads("\n".join(data)))
            data = []
            if len(events) == 1 and action is not None:
                action()
    conn.close()
    return events


def test_events_push_each_change(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1] * 4])
    url = served(run)

    def more() -> None:
        with open(run / "journal.jsonl", "a") as fh:
            fh.write(_row(1, [0.6] * 4, 1.0))

    events = _read_events(url, 2, action=more)
    assert [e["n_queries"] for e in events] == [4, 8]
    assert events[1]["curve"]["x"][-1] == 8 and events[1]["best"] == pytest.approx(0.6)


def test_missing_folder_appears(tmp_path, served):
    run = tmp_path / "later"
    url = served(run)
    assert _state(url)["kind"] == "missing"
    _write_run(run, [[0.3, 0.1]])
    assert _state(url)["kind"] == "run"


# -- security -------------------------------------------------------------------------------------------------------
def test_token_required_off_loopback(tmp_path, served, monkeypatch):
    run = tmp_path / "run"
    _write_run(run, [[0.1]])
    with pytest.raises(ConfigError, match="without a token"):
        serve(run, host="0.0.0.0")
    with pytest.raises(ConfigError, match="at least 8"):
        serve(run, host="0.0.0.0", token="short")
    monkeypatch.delenv("MANGO_WATCH_TOKEN", raising=False)
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(ConfigError, match="token"):
        main(p.parse_args([str(run), "--host", "0.0.0.0", "--port", "0"]))

    token = "s3cret-token-for-tests"
    url = served(run, host="0.0.0.0", token=token)
    assert f"?token={token}" in url
    bare = url.split("?")[0]
    for path in ("", "api/state", "events", "files/best.png"):
        code, body = _get(bare, path)
        assert code == 401, path
    assert _get(bare, "api/state?token=wrong-token-xx")[0] == 401
    assert _get(url, "api/state")[0] == 200
    assert _get(bare, "api/state", headers={"X-Mango-Token": token})[0] == 200
    assert _get(bare, "api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
    # the page sets a cookie that later requests may carry instead
    assert _get(bare, "api/state", headers={"Cookie": f"mango_watch_token={token}"})[0] == 200


def test_loopback_refuses_foreign_host_names(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1]])
    url = served(run)
    assert _get(url, "api/state", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert _get(url, "api/state", headers={"Host": f"localhost:{urlsplit(url).port}"})[0] == 200


# -- rig folders ---------------------------------------------------------------------------------------------------
def test_rig_folder_health_and_drift(tmp_path, served):
    run = tmp_path / "rig"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"budget": 60, "optimizer": "protes", "repeats": 2, "select": 0,
                                              "generator": {"name": "vqvae-digits"}}))
    t0 = time.time() - 10
    recs = []
    journal = []
    for g in range(3):
        ids = [g * 100000 + i for i in range(3)]  # 2 candidates + 1 reference image
        order = [0, 1, 2, 0, 1, 2]
        recs.append({"ev": "sent", "block": g, "codes": [[g, 0], [g, 1]], "kinds": ["cand", "cand", "ref0"],
                     "image_ids": ids, "order": order, "repeats": 2, "time": t0 + g})
        if g == 2:
            break  # sent, not answered yet
        got = order if g == 0 else order[:-1]  # block 1 lost a trial
        resp = [[float(i + g)] for i in got]  # candidate i responds i + g; the reference drifts by +1 per block
        recs.append({"ev": "response", "block": g, "attempt": g, "image_ids": [ids[i] for i in got],
                     "responses": resp, "time": t0 + g + 0.25})
        journal.append(_row(g, [0.0 + g, 1.0 + g], 1.0 + g))
    (run / "presentations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"ev": "resp')
    (run / "journal.jsonl").write_text("".join(journal))
    url = served(run)
    s = _state(url)
    assert s["kind"] == "rig" and s["status"] == "running"
    rig = s["rig"]
    assert rig["blocks"] == 2 and rig["sent_unanswered"] == 1 and rig["presentations"] == 11
    assert rig["retries"] == 1 and rig["retried_blocks"] == 1 and rig["dropped"] == 1
    assert rig["latency_median_s"] == pytest.approx(0.25, abs=1e-3)
    assert rig["reference"]["series"] == [[2.0, 3.0]]
    assert rig["reference"]["slope_per_block"] == [pytest.approx(1.0)]
    assert s["best"] == pytest.approx(2.0) and s["curve"]["x"] == [6.0, 11.0]
    assert s["n_queries"] == 11 and s["budget"] == 60
    # the closed loop's result.json names the rejected replies at the end
    (run / "result.json").write_text(json.dumps({"best_mean": 2.0, "best_n": 2, "ignored_messages": 4,
                                                 "seconds": 3.0}))
    s = _state(url)
    assert s["status"] == "finished" and s["rig"]["rejected"] == 4


# -- compare / scan folders ---------------------------------------------------------------------------------------
def test_compare_folder_table_and_baseline(tmp_path, served):
    out = tmp_path / "cmp"
    runs = []
    for opt in ("protes", "random"):
        for seed in (0, 1):
            cfg = {"budget": 20, "seed": seed, "optimizer": {"name": opt}, "problem": {"name": "separable"}}
            runs.append({"id": f"sep|{opt}|{seed}", "unit": "sep", "optimizer": opt, "seed": seed, "config": cfg,
                         "folder": f"runs/sep/{opt}/seed{seed}", "meta": {}})
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({"name": "demo-cmp", "budget": 20, "runs": runs}))
    _write_run(out / runs[0]["folder"], [[0.5] * 10, [0.9] * 10], budget=20)  # finished
    (out / runs[0]["folder"] / "result.json").write_text(json.dumps({"best_value": 0.9, "n_queries": 20}))
    _write_run(out / runs[2]["folder"], [[0.0, 1.0]], budget=20, optimizer="random")  # running
    # runs[1]: failed (named in compare_status.json); runs[3]: pending (no folder)
    (out / "compare_status.json").write_text(json.dumps({"errors": {runs[1]["id"]: "EvaluationError: NaN"}}))
    url = served(out)
    s = _state(url)
    assert s["kind"] == "compare" and s["name"] == "demo-cmp"
    status = {r["id"]: r["status"] for r in s["runs"]}
    assert status == {"sep|protes|0": "finished", "sep|protes|1": "failed", "sep|random|0": "running",
                      "sep|random|1": "pending"}
    assert s["counts"] == {"finished": 1, "failed": 1, "running": 1, "pending": 1}
    assert s["queries_total"] == 80 and s["queries_done"] == 22
    row = next(r for r in s["runs"] if r["id"] == "sep|protes|0")
    assert row["curve"]["x"][-1] == 20 and row["best"] == pytest.approx(0.9)
    bl = s["baselines"]["sep"]
    assert "random-search" in bl["source"]
    assert bl["y"][0] == pytest.approx(0.5) and bl["y"][1] == pytest.approx(0.75)  # best of 2 draws from {0, 1}
    # one run of the grid watched on its own: its baseline is the grid's random-search run of the same unit
    one = FolderWatcher(out / runs[0]["folder"]).state()
    assert one["baseline"]["source"].startswith("random-search run runs/sep/random/seed0")
    assert one["baseline"]["y"][1] == pytest.approx(0.75)


def test_folder_of_runs_without_manifest(tmp_path, served):
    out = tmp_path / "demo"
    _write_run(out / "unit-a" / "protes", [[0.2, 0.3]], budget=10)
    _write_run(out / "unit-a" / "ga", [[0.1, 0.4]], budget=10, optimizer="ga")
    s = _state(served(out))
    assert s["kind"] == "multi" and len(s["runs"]) == 2
    assert {r["optimizer"] for r in s["runs"]} == {"protes", "ga"}


def test_expected_best_of_n():
    assert expected_best_of_n(np.array([0.0, 1.0]), np.array([1, 2, 3])) == pytest.approx([0.5, 0.75, 0.875])
    v = np.random.default_rng(0).normal(size=300)
    mc = np.random.default_rng(1).choice(v, size=(20000, 10)).max(axis=1).mean()
    assert expected_best_of_n(v, np.array([10]))[0] == pytest.approx(mc, abs=0.02)
    assert np.isnan(expected_best_of_n(np.array([]), np.array([3]))).all()


def test_page_is_self_contained(tmp_path, served):
    run = tmp_path / "run"
    _write_run(run, [[0.1]])
    code, body = _get(served(run), "")
    html = body.decode()
    assert code == 200 and "EventSource" in html and 'id="curve"' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no CDN


def test_watch_option_for_run_commands(tmp_path, monkeypatch, capsys):
    from mango.watch import add_watch_option, parse_watch, serve_option

    assert parse_watch("") == ("127.0.0.1", 8765)
    assert parse_watch("0") == ("127.0.0.1", 0)
    assert parse_watch("localhost:9001") == ("localhost", 9001)
    assert parse_watch("[::1]:9002") == ("::1", 9002)
    with pytest.raises(ConfigError, match="0..65535"):
        parse_watch("host:99999")
    p = argparse.ArgumentParser()
    add_watch_option(p)
    assert p.parse_args([]).watch is None and p.parse_args(["--watch"]).watch == ""
    assert serve_option(None, tmp_path) is None
    monkeypatch.delenv("MANGO_WATCH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="without a token"):
        serve_option("0.0.0.0:0", tmp_path)
    url = serve_option(p.parse_args(["--watch", "127.0.0.1:0"]).watch, tmp_path / "run")
    try:
        assert f"live view: {url}" in capsys.readouterr().err
        assert _state(url)["kind"] == "missing"
    finally:
        stop(url)


def test_rig_view_of_a_real_closed_loop(tmp_path):
    """The rig view read from what mango.rig.closedloop really writes (ZeroMQ simulator with faults)."""
    pytest.importorskip("zmq")
    from _rig_helpers import free_port, generator, neurons, sim_thread

    from mango.rig import make_client
    from mango.rig.closedloop import closed_loop, stimulus_images as _images

    gen = generator()
    neu = neurons(gen)
    addr = f"tcp://127.0.0.1:{free_port()}"
    refs = _images(gen, gen.space.sample(np.random.default_rng(5), 2))
    with sim_thread(neu, "zmq", addr, faults="drop@2,nan@4", delay=0.5):
        with make_client("zmq", address=addr, timeout=0.4, retries=6, backoff=0.05) as cl:
            res = closed_loop(cl, gen, "ga", 200, seed=0, batch_size=10, repeats=2, reference=refs,
                              run_dir=tmp_path / "run")
    s = FolderWatcher(tmp_path / "run").state()
    rig = s["rig"]
    assert s["kind"] == "rig" and s["status"] == "finished"
    assert rig["blocks"] == res.blocks and rig["presentations"] == res.presentations == s["n_queries"]
    assert rig["retries"] >= 2 and rig["dropped"] == 0 and rig["sent_unanswered"] == 0
    assert rig["rejected"] == len(res.ignored) >= 1
    assert np.allclose(np.array(rig["reference"]["series"]).T, res.reference_means)
    assert s["best"] == pytest.approx(res.best_mean)
    # best mean after each block, as the loop computes it (the confirmation block ranks differently)
    assert np.allclose(s["curve"]["y"][:-1], res.block_best_mean[:-1])
    assert s["curve"]["x"] == [float(x) for x in res.block_presentations]
    assert rig["latency_max_s"] >= 0.4  # the dropped block waited for a timeout


def test_the_page_names_the_unit_of_a_users_model(tmp_path, served):
    """Runs of a user's model (mango.maximize, `mango run` with snn-unit/model-unit) keep the unit in the
    target's "objective"; the page showed only "vqvae-digits -> model", so two runs could not be told apart."""
    run = tmp_path / "run"
    _write_run(run, [[0.1, 0.2]], budget=10)
    cfg = json.loads((run / "run.json").read_text())
    cfg["target"] = {"model": "SpikingSequential", "name": "model", "objective": "spiking_out:1"}
    (run / "run.json").write_text(json.dumps(cfg))
    url = served(run, render=False)
    assert _state(url)["objective"] == "vqvae-digits -> SpikingSequential [objective=spiking_out:1]"
    cfg["target"] = {"model": "mynets:make_step_net", "name": "snn-unit", "objective": "5:3"}
    (run / "run.json").write_text(json.dumps(cfg))
    assert _state(url)["objective"] == "vqvae-digits -> snn-unit [objective=5:3]"


def test_watch_refuses_a_file(tmp_path, capsys):
    """`mango watch afile.txt` served a page that waited for a run forever."""
    from mango.cli import main as cli_main

    f = tmp_path / "afile.txt"
    f.write_text("x")
    assert cli_main(["watch", str(f), "--port", "0"]) == 2
    assert f"{f} is a file; mango watch takes a run folder" in capsys.readouterr().err


def test_a_run_whose_process_was_killed_shows_as_interrupted_not_running(tmp_path):
    """A run killed with SIGKILL (or by the OOM killer) never marks itself: its result.json said "running",
    and the report and the live view said so for ever (the view only turned "stalled" after a minute). The lock
    file names the process; when it no longer exists, the run is interrupted (its journal resumes it)."""
    import subprocess
    import sys

    from mango.report import run_status

    run = tmp_path / "run"
    _write_run(run, [[0.1] * 5])
    (run / "result.json").write_text(json.dumps({"status": "running", "best_value": 0.1}))
    code = ("import sys, time; from mango.journal import RunLock; RunLock.acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert FolderWatcher(run).state()["status"] == "running"
        assert run_status({"status": "running"}, run) == "running"
    finally:
        proc.kill()
        proc.wait()
    assert FolderWatcher(run).state()["status"] == "interrupted"
    assert run_status({"status": "running"}, run) == "interrupted"
    assert run_status({"status": "running"}) == "running"          # without the folder: as recorded
