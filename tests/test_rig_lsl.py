"""The LSL transport on loopback: closed loop against the simulator with faults, resume after a RigError,
and the search side's treatment of untrusted, stale, other-run and forged samples."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pylsl = pytest.importorskip("pylsl", reason="the LSL transport needs pylsl (pip install pylsl)")

from mango.rig.closedloop import PresentationLog, closed_loop, stimulus_images as _images  # noqa: E402
from mango.rig.lsl_transport import (IMAGE_TYPE, MARKER_TYPE, RESPONSE_TYPE, LslRigClient, _assemble,  # noqa: E402
                                     decode_image, decode_marker, decode_response, encode_images, encode_marker,
                                     encode_response, serve_lsl, stream_names)
from mango.rig.protocol import AuthError, Block, Limits, ProtocolError, Reply, RigError, new_nonce  # noqa: E402
from mango.rig.simulator import Faults, RigSimulator  # noqa: E402

from _rig_helpers import generator, log_check, neurons, random_expected  # noqa: E402


def _name() -> str:
    """A stream name prefix of its own per test: parallel tests on one machine never see each other's streams."""
    return f"mango-test-{uuid.uuid4().hex[:10]}"


@contextmanager
def lsl_sim(neu, name: str, faults: str | None = None, token: str | None = None, **kw):
    """The simulator playing the lab side of the LSL transport in a thread; yields it (``.n_requests``)."""
    sim = RigSimulator(neu, faults=Faults.parse(faults), **kw)
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=serve_lsl, args=(sim, name), kwargs={"stop": stop, "ready": ready, "token": token},
                          daemon=True)
    th.start()
    assert ready.wait(10)
    try:
        yield sim
    finally:
        stop.set()
        th.join(10)
        assert not th.is_alive()


def _block(n: int = 3, repeats: int = 2, c: int = 1, bid: int = 7) -> Block:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 16, 16, c), dtype=np.uint8)
    order = rng.permutation(np.repeat(np.arange(n), repeats))
    return Block(bid, bid * 100 + np.arange(n), imgs, repeats, order, 0, new_nonce())


def test_lsl_closed_loop_survives_every_fault_and_beats_random(tmp_path):
    gen = generator()
    neu = neurons(gen)
    name = _name()
    refs = _images(gen, gen.space.sample(np.random.default_rng(5), 2))
    faults = "drop@2,nan@3,duplicate@4,malformed@5,wrongblock@6,delay@7,crash@8"
    rec = tmp_path / "served.jsonl"
    with lsl_sim(neu, name, faults=faults, delay=0.8, restart=0.2, record=rec) as sim:
        with LslRigClient(name, run="run-a", timeout=0.5, retries=6, backoff=0.05) as cl:
            res = closed_loop(cl, gen, "protes", 400, seed=1, batch_size=16, repeats=2, retest_every=3,
                              reference=refs, run_dir=tmp_path / "run")
    # every fault but 'duplicate' costs a retry; on a loaded machine the 'delay' fault's late answer can
    # still be read before the client's timeout fires (it polls late), so that one may cost none
    assert sim.n_requests >= res.blocks + 5
    reasons = " | ".join(i["reason"] for i in res.ignored)
    for word in ("holds nan", "duplicate", "late or unknown", "must be [presentations, channels]"):
        assert word in reasons, reasons
    plog = log_check(tmp_path / "run", 400)
    assert res.presentations == 400
    # every block that was answered by the rig is in the log once; the rig presented each at least once
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
    assert set(served) == set(plog.responses)
    best = float(neu.expected(res.best_image[None])[0, 0])
    assert best > 1.5 * random_expected(gen, neu), (best, random_expected(gen, neu))
    assert res.reference_means.shape == (res.blocks - 2, 2)  # no references in the confirmation and hold-out blocks
    summary = json.loads((tmp_path / "run" / "result.json").read_text())
    assert summary["presentations"] == 400 and (tmp_path / "run" / "best.png").exists()


def test_lsl_retry_budget_error_leaves_run_resumable(tmp_path):
    gen = generator()
    neu = neurons(gen)
    name = _name()
    rec = tmp_path / "served.jsonl"
    kw = dict(seed=3, batch_size=12, repeats=2, retest_every=2, run_dir=tmp_path / "run")
    with lsl_sim(neu, name, faults="drop@3,drop@4", record=rec):
        with LslRigClient(name, run="run-b", timeout=0.3, retries=1, backoff=0.01) as cl:
            with pytest.raises(RigError, match="block 2 of run 'run-b' after 2 attempts"):
                closed_loop(cl, gen, "protes", 200, **kw)
        plog = PresentationLog(tmp_path / "run" / "presentations.jsonl")
        plog.close()
        assert sorted(plog.responses) == [0, 1] and 2 in plog.sent
        with LslRigClient(name, run="run-b", timeout=5, retries=1) as cl:
            res = closed_loop(cl, gen, "protes", 200, **kw)
    assert res.replayed_blocks == 2
    log_check(tmp_path / "run", 200)
    served = [json.loads(line)["block"] for line in rec.read_text().splitlines()]
    assert served.count(0) == 1 and served.count(1) == 1  # answered blocks were never presented again
    assert set(served) == set(range(res.blocks))


def test_lsl_without_rig_fails_with_the_stream_it_looked_for():
    name = _name()
    with LslRigClient(name, timeout=0.1, retries=1, connect_timeout=0.2) as cl:
        with pytest.raises(RigError, match=f"after 2 attempts .*no LSL stream named '{name}-responses'"):
            cl.present(_block())


def test_a_response_stream_in_another_format_is_named_as_such():
    """A lab publishing its responses as 2 float channels got "no LSL stream named ... found"; the stream is
    there, and the error now says what it is and what it must be."""
    import pylsl

    name = _name()
    info = pylsl.StreamInfo(f"{name}-responses", "MangoResponses", 2, pylsl.IRREGULAR_RATE, pylsl.cf_float32,
                            f"{name}-responses")
    outlet = pylsl.StreamOutlet(info)
    try:
        with LslRigClient(name, timeout=0.1, retries=0, connect_timeout=2.0) as cl:
            with pytest.raises(RigError, match=f"the LSL stream named '{name}-responses' is of type 'MangoResponses' "
                                               r"with 2 float32 channels, not of type 'MangoResponses' with 1 string"):
                cl.present(_block())
    finally:
        del outlet


def test_lsl_token_signs_markers_and_replies(tmp_path):
    gen = generator()
    neu = neurons(gen, channels=2)
    name = _name()
    with lsl_sim(neu, name, token="s3cret") as sim:
        with LslRigClient(name, token="s3cret", timeout=3, retries=0) as cl:
            res = closed_loop(cl, gen, "ga", 60, seed=0, batch_size=5, repeats=2, select="mean", confirm_top=0)
        assert res.presentations == 60 and not res.ignored
        n = sim.n_requests
        # a client with the wrong token: the rig neither presents nor answers its markers
        with LslRigClient(name, token="wrong", timeout=0.3, retries=1) as bad:
            with pytest.raises(RigError, match="no reply within"):
                bad.present(_block())
        assert sim.n_requests == n


# -- the search side against a hand-written lab side ---------------------------------------------------------
class _FakeLab:
    """A lab side that publishes whatever samples a test wants on NAME-responses, after reading each marker."""

    def __init__(self, name: str) -> None:
        names = stream_names(name)
        info = pylsl.StreamInfo(names["responses"], RESPONSE_TYPE, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                names["responses"])
        self.outlet = pylsl.StreamOutlet(info)
        self.names = names
        self.inlets: dict[str, object] = {}

    def connect(self, timeout: float = 10.0) -> None:
        for key, stype in (("markers", MARKER_TYPE), ("images", IMAGE_TYPE)):
            found = pylsl.resolve_byprop("name", self.names[key], 1, timeout)
            assert found and found[0].type() == stype
            self.inlets[key] = pylsl.StreamInlet(found[0], recover=False)
            self.inlets[key].open_stream(timeout)

    def next_block(self, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        images: dict[int, bytes] = {}
        while time.monotonic() < deadline:
            s, _ = self.inlets["images"].pull_sample(timeout=0.0)
            if s is not None:
                nonce, index, png = decode_image(s[0].encode())
                images[index] = png
                continue
            s, _ = self.inlets["markers"].pull_sample(timeout=0.05)
            if s is not None:
                marker = decode_marker(s[0].encode())
                while len(images) < marker["shape"][0] and time.monotonic() < deadline:
                    s2, _ = self.inlets["images"].pull_sample(timeout=0.05)
                    if s2 is not None:
                        _, index, png = decode_image(s2[0].encode())
                        images[index] = png
                return marker, _assemble(marker, images)
        raise AssertionError("no marker arrived")

    def push(self, text: str) -> None:
        self.outlet.push_sample([text])


def _client_in_thread(cl: LslRigClient, block: Block):
    out: dict = {}

    def run() -> None:
        try:
            out["reply"] = cl.present(block)
        except Exception as exc:
            out["err"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def test_client_ignores_other_run_stale_nonce_and_forged_samples_and_takes_the_right_one():
    name = _name()
    lab = _FakeLab(name)
    cl = LslRigClient(name, run="run-c", token="tok", timeout=5, retries=0)
    block = _block()
    th, out = _client_in_thread(cl, block)
    lab.connect()
    marker, got = lab.next_block()
    assert marker["run"] == "run-c" and marker["nonce"] == block.nonce and marker["trusted"] is False  # no token
    np.testing.assert_array_equal(got.images, block.images)
    np.testing.assert_array_equal(got.order, block.order)
    ids = got.image_ids[got.order]
    good = Reply(got.block, ids, np.arange(6, dtype=np.float64)[:, None], nonce=got.nonce)
    lab.push(encode_response(replace(good, responses=np.full((6, 1), 1e6)), "another-run", "tok"))  # other run
    lab.push(encode_response(replace(good, nonce=new_nonce(), responses=np.full((6, 1), 2e6)), "run-c", "tok"))
    lab.push(encode_response(replace(good, responses=np.full((6, 1), 3e6)), "run-c", None))  # unsigned
    lab.push(encode_response(replace(good, responses=np.full((6, 1), 4e6)), "run-c", "other token"))  # forged
    lab.push(encode_response(replace(good, responses=np.full((6, 1), 5e6), nonce=None), "run-c", "tok"))
    lab.push("\xff not json")
    lab.push(encode_response(good, "run-c", "tok", onsets=np.arange(6) * 0.1))
    th.join(20)
    cl.close()
    assert "err" not in out, out.get("err")
    reply = out["reply"]
    np.testing.assert_array_equal(reply.responses[:, 0], np.arange(6))  # only the genuine answer was taken
    np.testing.assert_array_equal(reply.image_ids, ids)
    np.testing.assert_allclose(reply.meta["onsets"], np.arange(6) * 0.1)
    reasons = [i["reason"] for i in cl.ignored]
    assert len(reasons) == 6, reasons
    assert "run 'another-run'" in reasons[0]
    assert "without the nonce" in reasons[1] and "without the nonce" in reasons[4]
    assert "unauthenticated" in reasons[2] and "unauthenticated" in reasons[3]
    assert "malformed" in reasons[5]


def test_client_rejects_an_invalid_answer_and_resends_the_block():
    name = _name()
    lab = _FakeLab(name)
    cl = LslRigClient(name, run="run-d", timeout=5, retries=1, backoff=0.01)
    block = _block()
    th, out = _client_in_thread(cl, block)
    lab.connect()
    m0, got = lab.next_block()
    ids = got.image_ids[got.order]
    # wrong counts: the first image shown three times, the last once
    bad_ids = ids.copy()
    bad_ids[bad_ids == got.image_ids[-1]] = got.image_ids[0]
    bad_ids[np.flatnonzero(ids == got.image_ids[0])[0]] = got.image_ids[-1]
    bad_ids[np.flatnonzero(ids == got.image_ids[-1])[0]] = got.image_ids[0]
    lab.push(encode_response(Reply(got.block, bad_ids, np.ones((6, 1)), nonce=got.nonce), "run-d"))
    m1, got1 = lab.next_block()  # the block again, as attempt 1 with a new nonce
    assert (m1["block"], m1["attempt"]) == (m0["block"], 1) and m1["nonce"] != m0["nonce"]
    lab.push(encode_response(Reply(got1.block, got1.image_ids[got1.order], np.full((6, 1), 2.0), nonce=got1.nonce),
                             "run-d"))
    th.join(20)
    cl.close()
    assert "err" not in out, out.get("err")
    assert out["reply"].responses.sum() == 12.0 and block.attempt == 1
    assert "shown 3 times" in cl.ignored[0]["reason"] or "expected 2" in cl.ignored[0]["reason"]


def test_a_late_answer_to_the_first_attempt_is_recorded_as_that_attempt(caplog):
    """Attempt 0 timed out, the block went out again as attempt 1, and then attempt 0's answer came: it was
    taken (rightly) but recorded as "attempt": 1, so the log could not be tied to the lab's own record."""
    name = _name()
    lab = _FakeLab(name)
    cl = LslRigClient(name, run="run-e", timeout=0.5, retries=1, backoff=5)
    block = _block()
    th, out = _client_in_thread(cl, block)
    lab.connect()
    m0, got = lab.next_block()
    m1, _ = lab.next_block()                  # attempt 0 timed out: the block again, new nonce
    assert m1["attempt"] == 1
    lab.push(encode_response(Reply(got.block, got.image_ids[got.order], np.full((6, 1), 3.0), nonce=got.nonce),
                             "run-e"))
    th.join(20)
    cl.close()
    assert "err" not in out, out.get("err")
    assert out["reply"].nonce == m0["nonce"] and block.attempt == 0
    # and, as over ZeroMQ, the run is told once that the lab is slower than --timeout
    assert any("answered" in r.getMessage() and "raise the timeout" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)


# -- the wire format ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
def test_marker_and_images_roundtrip_and_digest_check(c):
    block = _block(c=c)
    samples, digests = encode_images(block, "r")
    marker = decode_marker(encode_marker(block, "r", digests, "k").encode(), "k")
    assert marker["nonce"] == block.nonce and marker["trusted"] and marker["run"] == "r"
    got = {}
    for s in samples:
        nonce, index, png = decode_image(s.encode())
        assert nonce == block.nonce
        got[index] = png
    b = _assemble(marker, got)
    np.testing.assert_array_equal(b.images, block.images)
    np.testing.assert_array_equal(b.image_ids, block.image_ids)
    other, _ = encode_images(replace(block, images=255 - block.images), "r")
    _, i0, png0 = decode_image(other[0].encode())
    with pytest.raises(ProtocolError, match="does not match the marker's SHA-256"):
        _assemble(marker, {**got, 0: png0})
    with pytest.raises(ProtocolError, match="never arrived"):
        _assemble(marker, {1: got[1]})
    with pytest.raises(AuthError):
        decode_marker(encode_marker(block, "r", digests, None).encode(), "k")
    with pytest.raises(ProtocolError, match="sha256"):
        decode_marker(encode_marker(block, "r", digests[:-1]).encode())


def _resp(**changes) -> bytes:
    block = _block()
    r = Reply(block.block, block.image_ids[block.order], np.ones((6, 2)), nonce=block.nonce)
    h = json.loads(encode_response(r, "r"))
    h.update(changes)
    return json.dumps(h).encode()


@pytest.mark.parametrize("raw,reason", [
    (_resp(responses=[[float("nan"), 1.0]] + [[1.0, 1.0]] * 5), "finite"),
    (_resp(responses=[[float("inf"), 1.0]] + [[1.0, 1.0]] * 5), "finite"),
    (_resp(responses=[[1e300, 1.0]] + [[1.0, 1.0]] * 5), "magnitude"),
    (_resp(responses=[[10 ** 400, 1.0]] + [[1.0, 1.0]] * 5), "too large"),
    (_resp(responses=[[True, 1.0]] + [[1.0, 1.0]] * 5), "6 lists of 2 numbers.*presentation 0, channel 0 holds bool"),
    (_resp(responses=[[1.0, 1.0]] * 2 + [[1.0, "1"]] + [[1.0, 1.0]] * 3),
     "6 lists of 2 numbers.*presentation 2, channel 1 holds str '1', not a number"),
    (_resp(responses=[[1.0, 1.0]] * 5), "6 lists of 2 numbers.*got 5 rows"),
    (_resp(responses=[[1.0, 1.0]] * 3 + [[1.0]] + [[1.0, 1.0]] * 2), "presentation 3 has 1 values"),
    (_resp(shape=[6]), "must be \\[presentations, channels\\]"),
    (_resp(shape=[10 ** 6, 2]), "outside the limits"),
    (_resp(image_ids=[1, 2]), "has 2 entries, expected 6"),
    (_resp(dtype="float32"), "dtype"),
    (_resp(onsets=[0.0]), "onsets"),
    (_resp(onsets=[float("nan")] * 6), "onsets"),
    (_resp(nonce="short"), "nonce"),
    (_resp(block=-1), "block"),
    (_resp(extra=[[[[[1]]]]]), "nests"),
    (b'{"protocol": "mango-rig", "version": 2}', "version"),
    (b"\xff\xfe", "not UTF-8 JSON"),
])
def test_untrusted_response_samples_are_rejected_with_reason(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode_response(raw)


def test_response_size_is_checked_before_parsing():
    raw = _resp()
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_response(raw, limits=Limits(max_bytes=len(raw) - 1))
    assert decode_response(raw, limits=Limits(max_bytes=len(raw))).responses.shape == (6, 2)


def test_png_that_declares_another_size_is_refused_before_decoding():
    block = _block()
    big = replace(block, images=np.zeros((3, 32, 32, 1), dtype=np.uint8))
    samples, digests = encode_images(big, "r")  # a sender that lies about the size, with matching digests
    marker = decode_marker(encode_marker(block, "r", digests).encode())
    got = {decode_image(s.encode())[1]: decode_image(s.encode())[2] for s in samples}
    with pytest.raises(ProtocolError, match=r"PNG of \(32, 32\).*says \(16, 16\)"):
        _assemble(marker, got)


def test_the_documented_minimal_lab_side_runs_against_the_client(tmp_path):
    """The lab script in PROTOCOL_LSL.md, extracted verbatim (only NAME changed), serves a real closed loop."""
    import re
    import subprocess
    import sys

    doc = (Path(__file__).parents[1] / "mango" / "rig" / "PROTOCOL_LSL.md").read_text()
    section = doc.split("## Minimal lab side", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    name = _name()
    assert 'NAME = "mango"' in code
    script = tmp_path / "lab.py"
    script.write_text(code.replace('NAME = "mango"', f'NAME = "{name}"'))
    lab = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        gen = generator()
        with LslRigClient(name, timeout=10, retries=2, connect_timeout=30) as cl:
            block = _block()
            reply = cl.present(block)
            assert reply.meta["onsets"].shape == (6,) and np.all(np.diff(reply.meta["onsets"]) >= 0)
            np.testing.assert_array_equal(reply.image_ids, block.image_ids[block.order])
            res = closed_loop(cl, gen, "ga", 60, seed=0, batch_size=5, repeats=2, run_dir=tmp_path / "run")
            assert res.presentations == 60 and not cl.ignored
        assert lab.wait(20) == 0, lab.stdout.read().decode()  # the 'end' marker stopped it
    finally:
        lab.kill()
        lab.wait()
    log_check(tmp_path / "run", 60)
    # the doc says MANGO keeps the lab's onsets with the reply: in the presentation log, with the reply's nonce
    recs = [json.loads(line) for line in (tmp_path / "run" / "presentations.jsonl").read_text().splitlines()]
    answers = [r for r in recs if r["ev"] == "response"]
    assert answers and all(len(r["onsets"]) == len(r["image_ids"]) and len(r["nonce"]) == 32 for r in answers)


def test_simulator_answers_a_bad_marker_or_missing_images_with_an_error_and_presents_only_complete_blocks():
    """A MANGO side written by hand: a marker that breaks the rules and one whose images never come."""
    from mango.rig.lsl_transport import _dump

    gen = generator()
    neu = neurons(gen)
    name = _name()
    names = stream_names(name)
    sim = RigSimulator(neu)
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=serve_lsl, args=(sim, name),
                          kwargs={"stop": stop, "ready": ready, "image_wait": 0.3}, daemon=True)
    th.start()
    assert ready.wait(10)
    try:
        mk = pylsl.StreamOutlet(pylsl.StreamInfo(names["markers"], MARKER_TYPE, 1, pylsl.IRREGULAR_RATE,
                                                 pylsl.cf_string, "hand-markers"))
        im = pylsl.StreamOutlet(pylsl.StreamInfo(names["images"], IMAGE_TYPE, 1, pylsl.IRREGULAR_RATE,
                                                 pylsl.cf_string, "hand-images"))
        found = pylsl.resolve_byprop("name", names["responses"], 1, 10)
        inlet = pylsl.StreamInlet(found[0], recover=False)
        inlet.open_stream(10)
        assert mk.wait_for_consumers(10) and im.wait_for_consumers(10)
        block = _block()
        _, digests = encode_images(block, "hand")
        bad = json.loads(encode_marker(block, "hand", digests))
        bad["repeats"] = 0
        mk.push_sample([_dump({k: v for k, v in bad.items() if k not in ("protocol", "version")}, None)])
        mk.push_sample([encode_marker(block, "hand", digests)])  # its images are never sent
        # the same block again (a resend: new nonce), complete, while the first still waits for its images
        again = replace(block, attempt=1, nonce=new_nonce())
        samples, digests2 = encode_images(again, "hand")
        for s in samples:
            im.push_sample([s])
        mk.push_sample([encode_marker(again, "hand", digests2)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            s, _ = inlet.pull_sample(timeout=0.1)
            if s:
                got.append(json.loads(s[0]))
    finally:
        stop.set()
        th.join(10)
    errors = [g for g in got if g["type"] == "error"]
    answers = [g for g in got if g["type"] == "response"]
    assert len(errors) == 2 and len(answers) == 1, got
    assert all(e["run"] == "hand" and e["block"] == block.block and e["nonce"] == block.nonce for e in errors)
    assert "repeats" in errors[0]["reason"] and "never arrived" in errors[1]["reason"]
    assert answers[0]["nonce"] == again.nonce and answers[0]["run"] == "hand"
    reply = decode_response(json.dumps(answers[0]).encode())
    assert reply.responses.shape == (6, 1)
    assert sim.n_requests == 1  # only the complete block was presented


def test_two_runs_on_one_rig_and_prefix_each_take_only_their_own_answers():
    """The rig subscribes to every MANGO marker stream of its prefix; each client keeps its run's answers."""
    gen = generator()
    neu = neurons(gen)
    name = _name()
    with lsl_sim(neu, name) as sim:
        a = LslRigClient(name, run="run-x", timeout=10, retries=0)
        b = LslRigClient(name, run="run-y", timeout=10, retries=0)
        blocks = {"a": _block(bid=4), "b": _block(bid=4, n=2)}  # same block id in both runs
        out: dict = {}

        def go(key: str, cl: LslRigClient) -> None:
            out[key] = cl.present(blocks[key])

        ths = [threading.Thread(target=go, args=("a", a)), threading.Thread(target=go, args=("b", b))]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        a.close()
        b.close()
    assert sim.n_requests == 2
    for key in ("a", "b"):
        blk = blocks[key]
        np.testing.assert_array_equal(np.sort(out[key].image_ids), np.sort(np.repeat(blk.image_ids, blk.repeats)))
        assert out[key].meta["run"] == ("run-x" if key == "a" else "run-y")
    # each saw the other run's answer on the shared response stream and ignored it (if it was already listening)
    assert all("of run" in i["reason"] for i in a.ignored + b.ignored)
