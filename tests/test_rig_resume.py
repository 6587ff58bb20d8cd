"""SIGKILL the search process (``mango rig-run``) mid-run; rerun the same command; nothing lost, nothing twice."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

from mango.rig.closedloop import PresentationLog
from mango.rig.run import rig_run_id

from _rig_helpers import free_port, generator, neurons, sim_thread


def _responses(path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if b'"ev": "response"' in line)


def test_sigkill_resume_records_every_response_exactly_once(tmp_path):
    gen = generator()
    neu = neurons(gen)
    addr = f"tcp://127.0.0.1:{free_port()}"
    rec = tmp_path / "served.jsonl"
    out = tmp_path / "run"
    budget = 300
    cmd = [sys.executable, "-m", "mango.cli", "rig-run", "--address", addr, "--optimizer", "ga",
           "--budget", str(budget), "--batch-size", "10", "--repeats", "2", "--retest-every", "2",
           "--seed", "5", "--timeout", "5", "--retries", "3", "--out", str(out), "-q"]
    log = out / "presentations.jsonl"
    with sim_thread(neu, "zmq", addr, latency=0.01, record=rec):
        answered_at_kill: list[set[int]] = []
        served_at_kill: list[int] = []
        for kill_after in (3, 7):  # two kills at different points of the run
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 90
            while _responses(log) < kill_after and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # land somewhere inside the next block
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
            plog = PresentationLog(log)
            plog.close()
            answered_at_kill.append(set(plog.responses))
            time.sleep(0.3)  # let the simulator finish (and record) a block that was in flight
            served_at_kill.append(len(rec.read_text().splitlines()))
        n_served_before = len(rec.read_text().splitlines())
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from the log" in done.stdout
    plog = PresentationLog(log)  # raises if any block has two responses
    plog.close()
    blocks = sorted(plog.responses)
    assert blocks == list(range(len(blocks))) and sorted(plog.sent) == blocks
    assert sum(len(plog.responses[b]["image_ids"]) for b in blocks) == budget  # nothing lost, nothing extra
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
    # a block whose response was logged before a kill is never presented after it
    for answered, cut in zip(answered_at_kill, served_at_kill):
        assert answered and not answered & set(served[cut:]), (answered, served, cut)
    # at most the in-flight block of each kill was presented twice
    assert sum(served.count(b) - 1 for b in set(served)) <= len(answered_at_kill)
    assert len(served) > n_served_before
    summary = json.loads((out / "result.json").read_text())
    assert summary["presentations"] == budget and summary["blocks"] == len(blocks)
    journal_rows = (out / "journal.jsonl").read_text().splitlines()
    # one optimizer batch per search block; the last two blocks are the confirmation block and the
    # hold-out block (no optimizer batch)
    assert [json.loads(r)["batch"] for r in journal_rows] == blocks[:-2]
    assert set(plog.sent[blocks[-2]]["kinds"]) == {"confirm"} and plog.sent[blocks[-1]]["kinds"] == ["holdout"]
    assert summary["holdout"]["n"] >= 10 and summary["holdout"]["mean"] is not None


def test_rig_run_id_is_kept_on_resume_and_new_for_another_run_folder(tmp_path):
    """``mango rig-run`` names its file-drop manifests with this id: a resume must keep it, a new run
    (even in a deleted and recreated folder of the same name) must not reuse it."""
    first = rig_run_id(tmp_path / "my run")
    assert first.startswith("my_run-") and len(first) == len("my_run-") + 12
    assert rig_run_id(tmp_path / "my run") == first  # resume
    assert rig_run_id(tmp_path / "elsewhere" / "my run") != first  # same folder name, another run
    shutil.rmtree(tmp_path / "my run")
    assert rig_run_id(tmp_path / "my run") != first  # started again from scratch


def test_a_wrong_channel_can_be_corrected_on_resume_without_showing_the_images_again(tmp_path, capsys):
    """A --channel the rig does not record failed after the rig had answered block 0 (logged), and the
    corrected command was refused ("differs in: select"): the block shown to the animal was stranded. Now
    the error says what to do, and a resume with another channel replays the logged answer."""
    from mango.cli import main

    gen = generator()
    addr = f"tcp://127.0.0.1:{free_port()}"
    rec = tmp_path / "served.jsonl"
    out = tmp_path / "run"
    cmd = ["rig-run", "--address", addr, "--optimizer", "random", "--budget", "60", "--batch-size", "10",
           "--seed", "1", "--timeout", "5", "--retries", "1", "--out", str(out), "-q"]
    with sim_thread(neurons(gen), "zmq", addr, latency=0.0, record=rec):
        assert main([*cmd, "--channel", "3"]) == 2
        err = capsys.readouterr().err
        assert "channel 3 does not exist; the response has channels 0..0" in err and "rerun with a channel" in err
        shown = _responses(out / "presentations.jsonl")
        assert shown == 1
        assert main([*cmd, "--channel", "0"]) == 0
    log = PresentationLog(out / "presentations.jsonl")
    assert sorted(log.responses) == list(range(len(log.responses)))           # every block answered once
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines() if line.strip()]
    assert served.count(0) == 1                                               # block 0 was not shown again
    assert json.loads((out / "run.json").read_text())["select"] == 0
