"""Run folder safety (issue 13 items 6-10): one writer per folder, a folder knows which run it holds,
"finished" only with every final file complete, damage is reported not cut, finished runs left untouched."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mango import problems
from mango.compare import is_finished
from mango.errors import ConfigError, MangoError
from mango.journal import Journal, read_journal
from mango.loop import maximize

WORKER = Path(__file__).with_name("_resume_worker.py")


def _tt(seed: int = 1):
    return problems.tt_random(d=6, n=5, rank=2, seed=seed)


def _rows(folder: Path) -> int:
    path = folder / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


# -- item 6: two writers on one folder ----------------------------------------------------------
def test_second_process_on_a_running_folder_is_refused(tmp_path):
    """Reproducer: two identical runs started at once on one folder (``$C & $C``); before, both exited 0
    with interleaved journal rows and every later rerun failed "out of order"."""
    out = tmp_path / "conc"
    cmd = [sys.executable, str(WORKER), str(out), "protes", "0.2"]  # ~6 s of batches: the runs overlap
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    ok = [d for d in done if d[0] == 0]
    refused = [d for d in done if d[0] != 0]
    assert len(ok) == 1 and len(refused) == 1, done
    err = refused[0][2]
    assert "BEST" not in refused[0][1]
    assert "ConfigError" in err and "in use" in err and str(out) in err, err
    rows = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rows] == list(range(len(rows))) and sum(len(r["y"]) for r in rows) == 600
    # the folder is not stuck: a rerun returns the finished run's result
    again = subprocess.run([sys.executable, str(WORKER), str(out), "protes", "0"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [ln for ln in again.stdout.splitlines() if ln.startswith("BEST")] == \
        [ln for ln in ok[0][1].splitlines() if ln.startswith("BEST")]


def test_lock_is_held_for_the_run_and_released_after(tmp_path):
    from mango.journal import RunLock

    held = RunLock.acquire(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"in use: process \d+ holds its lock"):
        maximize(_tt(), "random", 30, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "journal.jsonl").exists(), "a refused run must not write"
    # readers (reports, the live view) take no lock
    assert read_journal(tmp_path / "run") == []
    held.release()
    res = maximize(_tt(), "random", 30, run_dir=tmp_path / "run")
    assert res.n_queries == 30
    RunLock.acquire(tmp_path / "run").release()  # released when the run returned


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    from mango.journal import RunLock

    code = ("import sys, time; from mango.journal import RunLock; RunLock.acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=str(tmp_path)):
        RunLock.acquire(tmp_path)
    proc.kill()
    proc.wait()
    RunLock.acquire(tmp_path).release()


def test_rig_run_takes_the_same_lock(tmp_path):
    from mango.journal import RunLock
    from mango.rig.closedloop import closed_loop
    from mango.rig.model import LocalRig

    from _rig_helpers import generator, neurons

    gen = generator()
    rig = LocalRig(neurons(gen))
    with RunLock.acquire(tmp_path / "rig"):
        with pytest.raises(ConfigError, match="in use"):
            closed_loop(rig, gen, "ga", 60, seed=0, batch_size=5, repeats=2, run_dir=tmp_path / "rig")
    res = closed_loop(rig, gen, "ga", 60, seed=0, batch_size=5, repeats=2, run_dir=tmp_path / "rig")
    assert res.presentations == 60
    assert json.loads((tmp_path / "rig" / "result.json").read_text())["status"] == "finished"


# -- item 7: a folder knows which run it holds --------------------------------------------------
def test_python_run_with_another_objective_is_refused(tmp_path):
    """Reproducer: maximize(..., run_dir=X) with no config, then with another objective: before, the second
    call returned the first run's result with 0 evaluations."""
    first = maximize(_tt(1), "protes", 60, seed=0, batch_size=10, run_dir=tmp_path)
    other = _tt(2)
    with pytest.raises(ConfigError, match="another objective/optimizer .*differs in: objective"):
        maximize(other, "protes", 60, seed=0, batch_size=10, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"differs in: .*optimizer\.k_top"):
        maximize(_tt(1), "protes", 60, seed=0, batch_size=10, params={"k_top": 3}, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"differs in: .*optimizer\.k\b"):
        maximize(_tt(1), "protes", 60, seed=0, batch_size=20, run_dir=tmp_path)
    again = maximize(_tt(1), "protes", 60, seed=0, batch_size=10, run_dir=tmp_path)  # the same run: fine
    assert again.best_value == first.best_value
    ident = json.loads((tmp_path / "identity.json").read_text())
    assert ident["optimizer"]["name"] == "protes" and ident["objective"]["space"]


def test_function_objectives_with_the_same_name_are_told_apart(tmp_path):
    from mango.objective import FunctionObjective

    base = _tt(1)
    a = FunctionObjective(base.fn, base.space)
    b = FunctionObjective(lambda I: -base.fn(I), base.space)
    maximize(a, "random", 20, run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"objective\.fn"):
        maximize(b, "random", 20, run_dir=tmp_path)


def test_folder_written_before_identity_json_existed_still_resumes(tmp_path):
    maximize(_tt(1), "random", 20, run_dir=tmp_path)
    (tmp_path / "identity.json").unlink()
    (tmp_path / "result.json").unlink()
    res = maximize(_tt(1), "random", 20, run_dir=tmp_path)
    assert res.n_queries == 20 and (tmp_path / "identity.json").exists()


# -- item 8: "finished" only with every final file complete ------------------------------------
def test_kill_between_final_files_never_leaves_a_finished_folder_with_a_broken_history(tmp_path):
    """Reproducer: history.npz could not be written (a kill in that window): before, result.json was already
    there, so `mango compare` counted the run finished and its report crashed (BadZipFile)."""
    (tmp_path / "history.npz").mkdir()  # writing history.npz fails, as a kill there would stop it
    with pytest.raises(OSError):
        maximize(_tt(), "random", 30, run_dir=tmp_path)
    assert not (tmp_path / "result.json").exists()
    cfg = json.loads((tmp_path / "run.json").read_text())
    assert not is_finished(cfg, tmp_path)
    (tmp_path / "history.npz").rmdir()
    res = maximize(_tt(), "random", 30, run_dir=tmp_path)  # resumes from the journal, writes all
    assert is_finished(cfg, tmp_path)
    with np.load(tmp_path / "history.npz") as h:
        np.testing.assert_array_equal(h["values"], res.values)
    assert not list(tmp_path.glob(".*.tmp*")), "temporary files left behind"


def test_a_result_json_marked_running_is_not_finished(tmp_path):
    res = maximize(_tt(), "random", 30, run_dir=tmp_path)
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["status"] == "finished"
    (tmp_path / "result.json").write_text(json.dumps({**summary, "status": "running"}))
    assert not is_finished(summary["config"], tmp_path)
    again = maximize(_tt(), "random", 30, run_dir=tmp_path)  # not finished: replayed and written
    assert again.best_value == res.best_value
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "finished"


# -- item 9: damage is reported, never cut silently --------------------------------------------
def test_truncated_checkpoint_falls_back_to_replay(tmp_path, caplog):
    """Reproducer: a truncated checkpoint.npz; before, resuming raised BadZipFile."""
    full = maximize(_tt(), "protes", 80, seed=3, batch_size=10, run_dir=tmp_path / "a", checkpoint_every=2)
    folder = tmp_path / "a"
    (folder / "result.json").unlink()  # an interrupted run: resumable, not finished
    ck = folder / "checkpoint.npz"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="mango.journal"):
        res = maximize(_tt(), "protes", 80, seed=3, batch_size=10, run_dir=folder, checkpoint_every=2)
    assert "checkpoint" in caplog.text and "replaying" in caplog.text
    assert res.best_value == full.best_value and res.n_queries == 80
    np.testing.assert_array_equal(res.values, full.values)


def _journal(folder: Path, n: int = 4) -> bytes:
    j = Journal.open(folder, {"a": 1})
    for b in range(n):
        j.append(np.full((2, 3), b), np.array([b, b + 0.5]), 0.1 * b)
    j.close()
    return (folder / "journal.jsonl").read_bytes()


def test_garbage_line_in_the_middle_is_reported_with_its_line_and_nothing_is_cut(tmp_path):
    """Reproducer: a garbage line in the middle of journal.jsonl; before, it and every row after it were
    cut off as a "torn last line"."""
    raw = _journal(tmp_path)
    lines = raw.splitlines(keepends=True)
    damaged = b"".join(lines[:2] + [b"#garbage\n"] + lines[2:])
    (tmp_path / "journal.jsonl").write_bytes(damaged)
    with pytest.raises(MangoError, match="line 3"):
        Journal.open(tmp_path, {"a": 1})
    with pytest.raises(MangoError, match="line 3"):
        read_journal(tmp_path)
    assert (tmp_path / "journal.jsonl").read_bytes() == damaged
    (tmp_path / "run.json").unlink()  # the run's own config (maximize adds budget, seed, optimizer)
    with pytest.raises(MangoError, match="line 3"):
        maximize(_tt(), "random", 30, run_dir=tmp_path, config={"a": 1})
    assert (tmp_path / "journal.jsonl").read_bytes() == damaged


def test_two_lines_merged_by_a_lost_newline_are_not_a_torn_line(tmp_path):
    raw = _journal(tmp_path)
    lines = raw.splitlines(keepends=True)
    damaged = raw[:-1]  # fine: the last row without its newline is a torn write
    merged = lines[0] + lines[1] + lines[2][:-1] + b"X" + lines[3][:-1]  # lines 3 and 4 merged, newline lost
    (tmp_path / "journal.jsonl").write_bytes(merged)
    with pytest.raises(MangoError, match="line 3"):
        Journal.open(tmp_path, {"a": 1})
    assert (tmp_path / "journal.jsonl").read_bytes() == merged
    (tmp_path / "journal.jsonl").write_bytes(damaged)
    assert len(Journal.open(tmp_path, {"a": 1}).rows) == 3


def test_presentation_log_damage_in_the_middle_is_reported(tmp_path):
    from mango.rig.closedloop import PresentationLog

    path = tmp_path / "presentations.jsonl"
    plog = PresentationLog(path)
    for b in range(3):
        plog.append({"ev": "sent", "block": b, "codes": [], "order": []})
        plog.append({"ev": "response", "block": b, "image_ids": [], "responses": []})
    plog.close()
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:1] + [b"\x00\x00garbage\n"] + lines[1:])
    path.write_bytes(damaged)
    with pytest.raises(MangoError, match="line 2"):
        PresentationLog(path)
    assert path.read_bytes() == damaged
    path.write_bytes(b"".join(lines) + b'{"ev": "sent", "blo')  # a torn last line is still cut
    plog = PresentationLog(path)
    plog.close()
    assert sorted(plog.responses) == [0, 1, 2] and path.read_bytes() == b"".join(lines)


# -- item 10: a finished run is left untouched --------------------------------------------------
def test_rerunning_a_finished_run_leaves_it_untouched(tmp_path):
    """Reproducer: rerun a finished run; before, result.json was rewritten with optimizer_seconds and
    eval_seconds 0.0."""
    first = maximize(_tt(), "protes", 60, seed=2, batch_size=10, run_dir=tmp_path)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file()}
    stored = json.loads((tmp_path / "result.json").read_text())
    again = maximize(_tt(), "protes", 60, seed=2, batch_size=10, run_dir=tmp_path)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file()}
    for name in ("result.json", "history.npz", "journal.jsonl", "run.json", "identity.json", "checkpoint.npz"):
        if name in files:
            assert after[name] == files[name], f"{name} was rewritten"
    assert again.best_value == first.best_value and again.n_queries == 60
    np.testing.assert_array_equal(again.values, first.values)
    assert again.optimizer_seconds == stored["optimizer_seconds"] > 0
    assert again.eval_seconds == stored["eval_seconds"]
    assert again.seconds == stored["seconds"]


def test_a_run_into_a_folder_holding_a_saved_result_is_refused_and_the_result_kept(tmp_path):
    """res.save(X) writes result.json, history.npz and best.png but no run.json. A run with run_dir=X used to
    take the folder: its live files overwrote the saved result, and, as the saved result.json counted as a
    finished run, its own final files were never written (result.json stayed 'running', with a stale best)."""
    first = maximize(_tt(1), "protes", 40, seed=0, batch_size=10)
    first.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match=r"holds a saved result .*use another folder"):
        maximize(_tt(2), "protes", 60, seed=1, batch_size=10, run_dir=tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".lock"}
    assert after == before


def test_a_resume_that_spells_out_defaults_is_the_same_run_and_a_real_change_names_both_values(tmp_path, capsys):
    """`--gen-param levels=16` (the SN-GAN's default), `--target-param layer=spiking_out` or `--batch-size 50`
    (elite's) on a folder started without them was refused as "another config (differs in: generator.levels)",
    with nothing to show what differed."""
    from mango.cli import main

    out = tmp_path / "r"

    def run(budget: int, *extra: str) -> int:
        return main(["run", "--generator", "sngan-digits", "--target", "snn-digits", "--target-param", "unit=3",
                     "--budget", str(budget), "--seed", "0", "--out", str(out), "-q", *extra])

    defaults = ("--gen-param", "levels=16", "--target-param", "layer=spiking_out", "--batch-size", "50")
    assert run(60) == 0
    assert run(100, *defaults) == 2               # budget 60 -> 100 is a real change: refused, values shown
    assert "differs in: budget 60 -> 100)" in capsys.readouterr().err
    assert run(60, *defaults) == 0
    assert json.loads((out / "run.json").read_text())["generator"] == {"name": "sngan-digits"}   # kept as recorded
    assert run(60, "--gen-param", "levels=8") == 2
    assert "generator.levels not set (its default) -> 8" in capsys.readouterr().err
