"""Closed loop against the rig simulator over a real loopback socket and a real folder, with faults."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mango.shrinkage import shrunk_means
import pytest

from mango import registry
from mango.errors import ConfigError
from mango.objective import Objective
from mango.rig import make_client
from mango.rig.closedloop import PresentationLog, closed_loop, select_channels
from mango.rig.closedloop import stimulus_images
from mango.rig.filedrop import manifest_path, read_block, write_response
from mango.rig.protocol import Reply, RigError

from _rig_helpers import free_port, generator, log_check, neurons, random_expected, sim_thread


def _sent_blocks(path: Path) -> int:
    """Number of "sent" records in a presentations log (0 if it does not exist yet)."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if b'"ev": "sent"' in line)


def test_zmq_closed_loop_survives_every_fault_and_beats_random(tmp_path):
    gen = generator()
    neu = neurons(gen)
    addr = f"tcp://127.0.0.1:{free_port()}"
    refs = stimulus_images(gen, gen.space.sample(np.random.default_rng(5), 2))
    faults = "drop@2,nan@3,duplicate@4,malformed@5,wrongblock@6,delay@7,crash@8"
    with sim_thread(neu, "zmq", addr, faults=faults, delay=0.8, restart=0.2) as sim:
        with make_client("zmq", address=addr, timeout=0.4, retries=6, backoff=0.05) as cl:
            res = closed_loop(cl, gen, "protes", 520, seed=1, batch_size=16, repeats=2, retest_every=3,
                              reference=refs, run_dir=tmp_path / "run")
    assert sim.n_requests >= res.blocks + 6  # every fault cost a retry, and was survived
    reasons = " | ".join(i["reason"] for i in res.ignored)
    for word in ("holds nan", "duplicate", "late or unknown", "must be [presentations, channels]"):
        assert word in reasons, reasons
    log_check(tmp_path / "run", 520)
    # the recommended image drives the noiseless neuron well above random images
    best = float(neu.expected(res.best_image[None])[0, 0])
    assert best > 1.5 * random_expected(gen, neu), (best, random_expected(gen, neu))
    # references were shown in every block and reported
    # the confirmation block shows the best codes again and the final hold-out block the chosen one,
    # both without references
    assert res.reference_means.shape == (res.blocks - 2, 2)
    assert res.best_n >= 2 + 4  # recommended code: repeats + confirm_repeats presentations at least
    summary = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(summary["reference"]["means_per_block"]) == res.blocks - 2
    assert summary["holdout"]["n"] >= 10 and res.holdout_n == summary["holdout"]["n"]
    assert summary["presentations"] == 520 and (tmp_path / "run" / "best.png").exists()


def _shrunk_best(per_code: dict[tuple, list[float]], min_n: int = 0) -> tuple:
    """The code with the best shrunk mean (mango.shrinkage) among those with >= min_n values."""
    codes = list(per_code)
    vals = [np.asarray(per_code[c]) for c in codes]
    post, _ = shrunk_means([v.sum() for v in vals], [(v ** 2).sum() for v in vals], [v.size for v in vals])
    post = np.where(np.array([v.size for v in vals]) >= min_n, post, -np.inf)
    return codes[int(np.argmax(post))]


def test_recommendation_is_best_mean_over_repeats_not_luckiest_trial(tmp_path):
    gen = generator()
    neu = neurons(gen, peak_rate=30.0)
    addr = f"tcp://127.0.0.1:{free_port()}"
    with sim_thread(neu, "zmq", addr):
        with make_client("zmq", address=addr, timeout=5) as cl:
            res = closed_loop(cl, gen, "ga", 300, seed=0, batch_size=10, repeats=3, retest_every=2,
                              run_dir=tmp_path)
    plog = log_check(tmp_path, 300)
    per_code: dict[tuple, list[float]] = {}
    single_best = -np.inf
    last = max(plog.sent)  # the hold-out block: used for the reported estimate only, never for the choice
    for b, sent in plog.sent.items():
        if b == last:
            continue
        rsp = plog.responses[b]
        y = select_channels(np.asarray(rsp["responses"]), 0)
        j = np.asarray(rsp["image_ids"]) - np.asarray(sent["image_ids"])[0]
        for i, code in enumerate(sent["codes"]):
            per_code.setdefault(tuple(code), []).extend(y[j == i].tolist())
        single_best = max(single_best, float(y.max()))
    means = {c: np.mean(v) for c, v in per_code.items()}
    # the choice: the best shrunk mean (winner's curse corrected, mango.shrinkage) among the codes
    # with the confirmed number of presentations (repeats 3 + confirmation 6)
    best_code = _shrunk_best(per_code, min_n=9)
    assert tuple(res.best_code.tolist()) == best_code
    assert res.best_mean == pytest.approx(means[best_code]) and res.best_n == len(per_code[best_code])
    assert res.best_mean < single_best  # the luckiest single trial is not what is reported
    # re-tests: every 2nd block (retest_every=2) shows the best-by-mean code so far once more; the final
    # blocks are the confirmation block and the hold-out block. Budget 300 = blocks of 10 candidates x 3
    # (+ 1 re-test x 3), confirmation 5 codes x 6, hold-out >= 10: blocks 0..8 are search blocks,
    # block 9 confirms, block 10 shows the chosen code alone (10 + the 2 presentations left over).
    assert last == 10 and set(plog.sent[9]["kinds"]) == {"confirm"}
    assert plog.sent[last]["kinds"] == ["holdout"] and plog.sent[last]["codes"] == [res.best_code.tolist()]
    assert plog.sent[last]["repeats"] == res.holdout_n == 12
    retest_blocks = [b for b in sorted(plog.sent) if "retest" in plog.sent[b]["kinds"]]
    assert retest_blocks == [2, 4, 6, 8]
    seen: dict[tuple, list[float]] = {}
    for b in sorted(plog.sent):
        sent, rsp = plog.sent[b], plog.responses[b]
        ids, order, rep = np.asarray(sent["image_ids"]), np.asarray(sent["order"]), sent["repeats"]
        n = len(ids)
        assert sent["kinds"].count("retest") == (1 if b in retest_blocks else 0)
        if b in retest_blocks:
            i = sent["kinds"].index("retest")
            assert tuple(sent["codes"][i]) == _shrunk_best(seen), b  # the incumbent, by shrunk mean
        # presentation order: each image exactly `repeats` times, shuffled (neither repeat nor tile order)
        assert sorted(order.tolist()) == np.repeat(np.arange(n), rep).tolist()
        if n > 1:  # (the hold-out block shows one image: nothing to shuffle)
            assert not np.array_equal(order, np.repeat(np.arange(n), rep))
            assert not np.array_equal(order, np.tile(np.arange(n), rep))
        np.testing.assert_array_equal(rsp["image_ids"], ids[order])  # and the rig showed that order
        y = select_channels(np.asarray(rsp["responses"]), 0)
        for i, code in enumerate(sent["codes"]):
            seen.setdefault(tuple(code), []).extend(y[order == i].tolist())
    retested = [tuple(plog.sent[b]["codes"][plog.sent[b]["kinds"].index("retest")]) for b in retest_blocks]
    for code in set(retested):  # a re-tested code gets 3 more presentations per re-test
        assert len(per_code[code]) >= 3 * (1 + retested.count(code)), (code, len(per_code[code]))
    assert res.counts.max() >= 3 * (1 + max(retested.count(c) for c in retested))


@pytest.mark.parametrize("fmt", ["npz", "csv", "mat"])
def test_filedrop_closed_loop_with_faults(tmp_path, fmt):
    gen = generator()
    neu = neurons(gen)
    root = tmp_path / "drop"
    with sim_thread(neu, "filedrop", str(root), faults="nan@2,malformed@3,duplicate@4,drop@5,wrongblock@6",
                    fmt=fmt) as sim:
        cl = make_client("filedrop", folder=str(root), timeout=1.0, retries=4, backoff=0.05, run="r1")
        res = closed_loop(cl, gen, "ga", 160, seed=0, batch_size=10, repeats=2, run_dir=tmp_path / "run")
    assert sim.n_requests >= res.blocks + 4
    log_check(tmp_path / "run", 160)
    rejected = list((root / "responses" / "rejected").iterdir())
    # exactly the NaN, garbage and wrong-block files were set aside (the half-written 'duplicate' file was
    # completed in time and used; 'drop' left no file)
    assert len(rejected) == 3, [p.name for p in rejected]
    reasons = [i["reason"] for i in cl.ignored]
    assert len(reasons) == 3, reasons
    assert sum("NaN" in r for r in reasons) == 1 and sum("expected block" in r for r in reasons) == 1
    assert sum("unreadable" in r and "NaN" not in r for r in reasons) == 1
    assert len(list((root / "responses" / "done").glob(f"*.{fmt}"))) == res.blocks
    assert sorted(p.name for p in (root / "stimuli").iterdir())[0].startswith("b000000_i00000000")


def test_retry_budget_error_leaves_run_resumable(tmp_path):
    gen = generator()
    neu = neurons(gen)
    addr = f"tcp://127.0.0.1:{free_port()}"
    rec = tmp_path / "served.jsonl"
    kw = dict(seed=3, batch_size=12, repeats=2, retest_every=2, run_dir=tmp_path / "run")
    with sim_thread(neu, "zmq", addr, faults="drop@3,drop@4", record=rec):
        with make_client("zmq", address=addr, timeout=0.3, retries=1, backoff=0.01) as cl:
            with pytest.raises(RigError, match="block 2 after 2 attempts"):
                closed_loop(cl, gen, "protes", 200, **kw)
        plog = PresentationLog(tmp_path / "run" / "presentations.jsonl")
        plog.close()
        assert sorted(plog.responses) == [0, 1] and 2 in plog.sent
        with make_client("zmq", address=addr, timeout=5, retries=1) as cl:
            res = closed_loop(cl, gen, "protes", 200, **kw)
    assert res.replayed_blocks == 2
    log_check(tmp_path / "run", 200)
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
    assert served.count(0) == 1 and served.count(1) == 1  # answered blocks were never presented again
    # a changed seed is refused rather than mixed into the old run
    with pytest.raises(Exception, match="another config"):
        closed_loop(make_client("zmq", address=addr), gen, "protes", 200, **{**kw, "seed": 4})


def test_rig_target_is_a_noisy_registry_target(tmp_path):
    gen = generator()
    neu = neurons(gen, channels=3)
    addr = f"tcp://127.0.0.1:{free_port()}"
    with sim_thread(neu, "zmq", addr):
        tgt = registry.create("target", "rig", {"address": addr, "select": [0, 2], "repeats": 2, "timeout": 5})
        try:
            obj = Objective(gen, tgt)
            I = gen.space.sample(np.random.default_rng(0), 4)
            y1, y2 = obj(I), obj(I)
            assert y1.shape == (4,) and obj.n_evaluated == 8  # noisy: never cached
            assert tgt.noisy and not tgt.differentiable
            tgt.select = None
            allch = tgt(gen(gen.space.decode(I)))
            assert tuple(allch.shape) == (4, 3)
        finally:
            tgt.close()
        # without a selection a multi-channel rig is refused, not read on channel 0 silently
        tgt = registry.create("target", "rig", {"address": addr, "repeats": 1, "timeout": 5})
        try:
            with pytest.raises(ConfigError, match=r"the response has 3 channels; choose with select="):
                tgt(gen(gen.space.decode(I)))
        finally:
            tgt.close()


def test_second_rig_target_over_the_same_folder_ignores_the_first_runs_responses(tmp_path):
    """Two RigTarget runs over one file-drop folder: each has its own run id and block ids, and a leftover
    response of the first run (a late answer nobody read) is never taken for the second run's."""
    gen = generator()
    neu = neurons(gen)
    root = tmp_path / "drop"
    kw = {"protocol": "filedrop", "folder": str(root), "repeats": 2, "timeout": 5, "retries": 1}
    x = gen(gen.space.decode(gen.space.sample(np.random.default_rng(0), 3)))
    with sim_thread(neu, "filedrop", str(root)):
        first = registry.create("target", "rig", kw)
        y1 = first(x)
        first(x)
        first_blocks = sorted(p.name for p in (root / "blocks").glob("block_*.json"))
        # the first run's rig answers its first block once more, late: a response file nobody reads
        stale_block = int(first_blocks[0][6:12])
        blk, run1 = read_block(manifest_path(root, stale_block))
        stale = root / "responses" / f"block_{stale_block:06d}.npz"
        write_response(stale, Reply(blk.block, blk.image_ids[blk.order], np.full((6, 1), 1e6)), run1)
        second = registry.create("target", "rig", kw)
        y2 = second(x)
        y3 = second(x)
    assert run1 and first.client.run == run1 and second.client.run not in ("", run1)
    assert float(y1.max()) < 1e3 and float(y2.max()) < 1e3 and float(y3.max()) < 1e3
    second_blocks = sorted(p.name for p in (root / "blocks").glob("block_*.json") if p.name not in first_blocks)
    assert len(second_blocks) == 2 and min(second_blocks) > max(first_blocks)  # no block id reused
    assert stale.exists()  # never consumed by the second run
    np.testing.assert_array_equal(np.load(stale)["responses"], 1e6)
    done = sorted(p.name for p in (root / "responses" / "done").iterdir())
    assert done == sorted(b.replace(".json", ".npz") for b in first_blocks + second_blocks)


def test_simulator_process_killed_mid_block_client_retries(tmp_path):
    """``mango rig-sim`` (cnn-digits unit) killed while presenting; restarted; the client retries that block."""
    gen = generator()
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    rec = tmp_path / "served.jsonl"
    cmd = [sys.executable, "-m", "mango.cli", "rig-sim", "--address", addr, "--target", "cnn-digits",
           "--latency", "0.01", "--record", str(rec)]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: dict = {}

    def run() -> None:
        try:
            with make_client("zmq", address=addr, timeout=3.0, retries=20, backoff=0.2) as cl:
                out["res"] = closed_loop(cl, gen, "ga", 240, seed=0, batch_size=10, repeats=2,
                                         run_dir=tmp_path / "run")
        except Exception as exc:  # pragma: no cover - reported below
            out["err"] = exc

    th = threading.Thread(target=run)
    th.start()
    log_path = tmp_path / "run" / "presentations.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _sent_blocks(log_path) < 3:  # blocks 0, 1 answered, 2 sent
            time.sleep(0.01)
        assert rec.exists(), sim.stdout.read().decode() if sim.poll() is not None else "no block served"
        time.sleep(0.05)  # inside block 2's 20 x 0.01 s of presentations
        sim.send_signal(signal.SIGKILL)
        sim.wait()
        killed_in = PresentationLog(log_path)
        killed_in.close()
        served_before = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
        sim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        th.join(120)
    finally:
        sim.kill()
        sim.wait()
    assert "err" not in out, out.get("err")
    res = out["res"]
    assert res.presentations == 240
    log_check(tmp_path / "run", 240)
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
    assert set(served) == set(range(res.blocks))
    # the kill landed mid-block: block 2 was sent, the killed rig never finished (recorded) it and the
    # search had no response for it
    assert set(served_before) == {0, 1} and 2 in killed_in.sent and 2 not in killed_in.responses
    # and that block was retried: only a later attempt was served and answered
    attempts = [json.loads(line)["attempt"] for line in rec.read_text().splitlines()
                if json.loads(line)["block"] == 2]
    assert attempts and min(attempts) >= 1, attempts
    plog = PresentationLog(log_path)
    plog.close()
    assert plog.responses[2]["attempt"] >= 1  # the search journal says which attempt was answered
