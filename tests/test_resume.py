"""A run killed with SIGKILL at any point resumes from its journal with identical results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_resume_worker.py")


def _run(out, opt, slow=0.0):
    p = subprocess.run([sys.executable, str(WORKER), str(out), opt, str(slow)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("BEST")][-1]
    return line


def _journal_rows(folder):
    path = Path(folder) / "journal.jsonl"
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


@pytest.mark.parametrize("opt", ["protes", "discrete-one-plus-one", "ttopt"])
def test_sigkill_resume_identical(tmp_path, opt):
    reference = _run("-", opt)
    out = tmp_path / "run"
    kills = 0
    for target_rows in (4, 17):  # kill at two points, mid-run each time
        proc = subprocess.Popen([sys.executable, str(WORKER), str(out), opt, "0.05"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while _journal_rows(out) < target_rows and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    final = _run(out, opt)
    assert final == reference
    rows = [json.loads(ln) for ln in (out / "journal.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rows] == list(range(len(rows)))
    assert sum(len(r["y"]) for r in rows) == 600  # every query recorded exactly once
    codes = np.concatenate([np.asarray(r["I"]) for r in rows])
    assert codes.shape == (600, 8)


def test_torn_last_line_is_cut(tmp_path):
    from mango.journal import Journal

    j = Journal.open(tmp_path, {"a": 1})
    j.append(np.zeros((2, 3), dtype=int), np.array([1.0, 2.0]), 0.1)
    j.close()
    with open(tmp_path / "journal.jsonl", "a") as fh:
        fh.write('{"batch": 1, "I": [[0, 0')
    j2 = Journal.open(tmp_path, {"a": 1})
    assert len(j2.rows) == 1
    j2.append(np.ones((1, 3), dtype=int), np.array([3.0]), 0.2)
    j2.close()
    assert len(Journal.open(tmp_path, {"a": 1}).rows) == 2


def test_resume_refuses_other_config(tmp_path):
    from mango.errors import ConfigError
    from mango.journal import Journal

    # a folder with no recorded batch (a run that failed before its first one) takes the new config
    Journal.open(tmp_path, {"seed": 1, "budget": 10}).close()
    j = Journal.open(tmp_path, {"seed": 2, "budget": 10})
    j.append(np.zeros((1, 3), dtype=int), np.array([1.0]), 0.1)
    j.close()
    # once a batch is recorded, another config is refused and nothing is rewritten
    before = (tmp_path / "run.json").read_bytes()
    with pytest.raises(ConfigError, match="differs in: seed"):
        Journal.open(tmp_path, {"seed": 1, "budget": 10})
    assert (tmp_path / "run.json").read_bytes() == before
