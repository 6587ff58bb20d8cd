"""A rig slower than the client's timeout, and a rig whose channels change: nothing shown twice, nothing stuck.

* The client resends a block when the rig has not answered within ``--timeout``; a rig still presenting the
  block then got it again and showed it again (608 presentations for a budget of 200 in a user's trial).
  The simulator now answers a resend of the block it last answered from its record (``PROTOCOL.md``,
  *Resends*), and the client says once that the timeout is shorter than the rig's block time.
* A rig whose answers changed channel count mid-run had the bad answer logged before the channel selection
  read it: every resume replayed it and failed, so the run folder could never finish.
* A multi-channel rig is no longer optimized on channel 0 silently: without a selection the run stops at the
  first answer with an error naming the channels, and the same call with ``select=`` replays that answer.
"""
from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest

from mango.errors import ConfigError
from mango.rig import make_client
from mango.rig.closedloop import PresentationLog, closed_loop
from mango.rig.protocol import Reply, RigError

from _rig_helpers import free_port, generator, neurons, sim_thread


def test_a_rig_slower_than_the_timeout_shows_each_block_once_and_is_told_to_raise_it(tmp_path, caplog):
    gen = generator()
    addr = f"tcp://127.0.0.1:{free_port()}"
    rec = tmp_path / "served.jsonl"
    # 20 presentations a block at 0.03 s: 0.6 s a block, against a 0.25 s timeout (two resends per block)
    with sim_thread(neurons(gen), "zmq", addr, latency=0.03, record=rec) as sim:
        with make_client("zmq", address=addr, timeout=0.25, retries=8, backoff=0.0) as cl, \
                caplog.at_level(logging.INFO, logger="mango.rig"):
            res = closed_loop(cl, gen, "random", 80, seed=0, batch_size=10, repeats=2, confirm_top=1,
                              confirm_repeats=2, holdout_repeats=4, run_dir=tmp_path / "run")
    served = Counter(json.loads(line)["block"] for line in rec.read_text().splitlines() if line.strip())
    assert set(served) == set(range(res.blocks)) and set(served.values()) == {1}, served   # each shown once
    assert sum(json.loads(line)["presentations"] for line in rec.read_text().splitlines() if line.strip()) == 80
    assert sim.n_from_record >= 1                   # resends came, and were answered from the record
    slow = [r for r in caplog.records if "raise the timeout" in r.getMessage()]
    assert slow and slow[0].levelno == logging.WARNING and sum(r.levelno == logging.WARNING for r in slow) == 1
    assert "block 0 " in slow[0].getMessage()       # said at the first slow block, whichever answer got through
    assert "--timeout" in slow[0].getMessage() and "0.25 s" in slow[0].getMessage()
    assert len(slow) >= res.blocks - 2              # every 0.6 s block (the confirm and hold-out ones are short)


def test_a_first_send_is_always_presented_even_when_it_repeats_the_last_block(tmp_path):
    """Only resends (attempt > 0) are answered from the record: a new run that starts at block 0 with the
    same images as the last block the rig answered (the same seed, a new folder) gets new presentations."""
    gen = generator()
    addr = f"tcp://127.0.0.1:{free_port()}"
    rec = tmp_path / "served.jsonl"
    with sim_thread(neurons(gen), "zmq", addr, record=rec) as sim:
        for run in ("a", "b"):
            with make_client("zmq", address=addr, timeout=5) as cl:
                closed_loop(cl, gen, "random", 20, seed=0, batch_size=10, repeats=2, confirm_top=0,
                            holdout_repeats=0, run_dir=tmp_path / run)
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines() if line.strip()]
    assert served == [0, 0] and sim.n_from_record == 0


class TwoChannelRig:
    """A deterministic rig: channel 0 the mean pixel of each image, channel 1 twice that; from block
    ``lose_at`` on (while ``lose_at`` is set) it reports channel 0 only (an electrode lost)."""

    def __init__(self, lose_at: int | None = None) -> None:
        self.lose_at, self.shown = lose_at, Counter()

    def present(self, block):
        order = np.asarray(block.order)
        m = np.asarray(block.images, dtype=np.float64).reshape(len(block.images), -1).mean(1)[order]
        self.shown[int(block.block)] += 1
        resp = np.stack([m, 2 * m], 1)
        if self.lose_at is not None and block.block >= self.lose_at:
            resp = resp[:, :1]
        return Reply(block.block, np.asarray(block.image_ids)[order], resp)


def _run(rig, folder, select=1):
    return closed_loop(rig, generator(), "random", 120, seed=3, batch_size=10, repeats=2, retest_every=0,
                       confirm_top=1, holdout_repeats=4, select=select, run_dir=folder)


def test_a_channel_lost_mid_run_is_refused_unrecorded_and_the_run_resumes_once_the_rig_is_fixed(tmp_path):
    rig = TwoChannelRig(lose_at=3)
    with pytest.raises(RigError, match=r"block 3 with 1 channel\(s\), but its earlier answers in this run had 2"):
        _run(rig, tmp_path / "run")
    log = PresentationLog(tmp_path / "run" / "presentations.jsonl")
    assert sorted(log.responses) == [0, 1, 2]        # the 1-channel answer was not logged
    rig.lose_at = None                               # the electrode is back
    res = _run(rig, tmp_path / "run")                # the same call resumes and finishes
    ref = _run(TwoChannelRig(), tmp_path / "ref")    # uninterrupted, on a rig that never lost it
    np.testing.assert_array_equal(res.best_code, ref.best_code)
    assert res.holdout_mean == ref.holdout_mean and res.presentations == ref.presentations == 120
    assert rig.shown[0] == rig.shown[1] == rig.shown[2] == 1 and rig.shown[3] == 2


def test_a_folder_started_with_channel_0_resumes_without_naming_it(tmp_path):
    """Before select=None became the default, every folder recorded select 0: the same call (no select)
    must resume it, not be refused for "select 0 -> None"."""
    rig = TwoChannelRig(lose_at=2)
    with pytest.raises(RigError):
        _run(rig, tmp_path / "run", select=0)
    rig.lose_at = None
    res = closed_loop(rig, generator(), "random", 120, seed=3, batch_size=10, repeats=2, retest_every=0,
                      confirm_top=1, holdout_repeats=4, run_dir=tmp_path / "run")
    ref = _run(TwoChannelRig(), tmp_path / "ref", select=0)
    np.testing.assert_array_equal(res.best_code, ref.best_code)


def test_a_multi_channel_rig_needs_a_selection_and_its_first_answer_is_replayed(tmp_path):
    rig = TwoChannelRig()
    with pytest.raises(ConfigError, match="the response has 2 channels; choose with select="):   # the default
        closed_loop(rig, generator(), "random", 120, seed=3, batch_size=10, repeats=2, retest_every=0,
                    confirm_top=1, holdout_repeats=4, run_dir=tmp_path / "run")
    res = _run(rig, tmp_path / "run", select=1)
    assert rig.shown[0] == 1                         # block 0 was not shown again
    ref = _run(TwoChannelRig(), tmp_path / "ref", select=1)
    np.testing.assert_array_equal(res.best_code, ref.best_code)
    # a one-channel rig needs no selection
    one = closed_loop(TwoChannelRig(lose_at=0), generator(), "random", 60, seed=3, batch_size=10, repeats=2,
                      confirm_top=1, holdout_repeats=4, run_dir=None)
    assert one.presentations == 60


def test_an_interrupted_rig_run_says_how_to_resume(tmp_path, capsys):
    """`mango rig-run` stopped by Ctrl-C (or SIGTERM) said only "interrupted"; it now names the way back."""
    import _thread
    import threading

    from mango.cli import main

    gen = generator()
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "run"
    cmd = ["rig-run", "--address", addr, "--optimizer", "random", "--budget", "200", "--batch-size", "10",
           "--seed", "1", "--timeout", "5", "--out", str(out), "-q"]
    with sim_thread(neurons(gen), "zmq", addr, latency=0.01):
        timer = threading.Timer(0.8, _thread.interrupt_main)
        timer.start()
        try:
            assert main(cmd) == 130
        finally:
            timer.cancel()
        err = capsys.readouterr().err
        assert f"interrupted; rerun the same command to resume from {out}" in err, err
        assert main(cmd) == 0                       # and it does
    assert json.loads((out / "result.json").read_text())["presentations"] == 200
