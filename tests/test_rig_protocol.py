"""mango-rig/1 wire format, file formats and the socket server's rejection of malformed messages."""
from __future__ import annotations

import json
import logging
import threading
import time

import h5py
import numpy as np
import pytest

from mango.errors import ConfigError
from mango.rig import make_client
from mango.rig.closedloop import select_channels
from mango.rig.filedrop import FileDropClient, read_block, read_response, write_block, write_response
from mango.rig.protocol import (_pack, Block, Limits, ProtocolError, Reply, RigError, decode_block, decode_reply,
                                encode_block, encode_reply, validate_reply_for)
from mango.rig.simulator import Faults

from _rig_helpers import free_port, generator, neurons, scripted_rig, sim_thread


def _block(n=3, repeats=2, c=1):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 16, 16, c), dtype=np.uint8)
    order = rng.permutation(np.repeat(np.arange(n), repeats))
    return Block(7, np.arange(100, 100 + n), imgs, repeats, order)


@pytest.mark.parametrize("encoding,c", [("raw", 1), ("png", 1), ("png", 3)])
def test_block_roundtrip(encoding, c):
    b = _block(c=c)
    got = decode_block(encode_block(b, token="s3cret", encoding=encoding), token="s3cret")
    assert got.block == 7 and got.repeats == 2
    np.testing.assert_array_equal(got.images, b.images)
    np.testing.assert_array_equal(got.order, b.order)
    np.testing.assert_array_equal(got.image_ids, b.image_ids)


def test_reply_roundtrip_and_no_pickle():
    r = Reply(7, np.array([100, 101, 100]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    frames = encode_reply(r)
    assert json.loads(frames[0])["protocol"] == "mango-rig" and b"pickle" not in frames[0]
    got = decode_reply(frames)
    np.testing.assert_array_equal(got.responses, r.responses)
    np.testing.assert_array_equal(got.image_ids, r.image_ids)


def _mutate_header(frames, **changes):
    h = json.loads(frames[0])
    h.update(changes)
    return [json.dumps(h).encode()] + frames[1:]


@pytest.mark.parametrize("make,reason", [
    (lambda f: [b"\xff not json"] + f[1:], "not UTF-8 JSON"),
    (lambda f: _mutate_header(f, protocol="other"), "unknown protocol"),
    (lambda f: _mutate_header(f, version=99), "unsupported"),
    (lambda f: _mutate_header(f, type="pickle"), "unknown message type"),
    (lambda f: f[:1] + [f[1][:-1]], "expected one frame"),
    (lambda f: _mutate_header(f, shape=[3, 16, 16, 2]), "not allowed"),
    (lambda f: _mutate_header(f, image_ids=[1, 1, 2]), "unique"),
    (lambda f: _mutate_header(f, order=[0, 0, 0, 1, 1, 2]), "exactly 'repeats' times"),
    (lambda f: _mutate_header(f, repeats=0), "repeats"),
    (lambda f: _mutate_header(f, dtype="float32"), "dtype"),
])
def test_malformed_blocks_are_rejected_with_reason(make, reason):
    frames = make(encode_block(_block()))
    with pytest.raises(ProtocolError, match=reason):
        decode_block(frames)


def test_size_limits_and_token():
    frames = encode_block(_block(n=3))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_block(frames, limits=Limits(max_bytes=100))
    with pytest.raises(ProtocolError, match="allowed 1..2"):
        decode_block(frames, limits=Limits(max_images=2))
    with pytest.raises(ProtocolError, match="no 'mac'"):
        decode_block(frames, token="abc")
    signed = encode_block(_block(), token="abc")
    with pytest.raises(ProtocolError, match="authentication failed"):
        decode_block(signed, token="wrong")
    tampered = signed[:1] + [bytes([signed[1][0] ^ 1]) + signed[1][1:]]
    with pytest.raises(ProtocolError, match="authentication failed"):
        decode_block(tampered, token="abc")


def test_nan_reply_rejected():
    frames = encode_reply(Reply(1, np.array([1, 2]), np.array([[1.0], [np.nan]])))
    with pytest.raises(ProtocolError, match="nan"):
        decode_reply(frames)


@pytest.mark.parametrize("fmt", ["npz", "csv", "mat"])
def test_response_files_roundtrip_and_half_written(tmp_path, fmt):
    r = Reply(4, np.array([400, 401, 400, 401]), np.arange(8.0).reshape(4, 2))
    p = tmp_path / f"block_000004.{fmt}"
    write_response(p, r, run="run1")
    got, meta = read_response(p)
    np.testing.assert_array_equal(got.responses, r.responses)
    np.testing.assert_array_equal(got.image_ids, r.image_ids)
    assert meta == {"block": 4, "run": "run1"}  # every format names its block and run
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProtocolError):
        read_response(p)


def test_mat_in_matlab_column_major_orientation(tmp_path):
    p = tmp_path / "block_000001.mat"
    with h5py.File(p, "w") as f:  # what MATLAB -v7.3 shows h5py for a [P=3, ch=2] matrix
        f["image_ids"] = np.array([[1.0, 2.0, 1.0]])
        f["responses"] = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    got, _ = read_response(p)
    assert got.responses.shape == (3, 2) and got.responses[2, 1] == 6.0
    np.testing.assert_array_equal(got.image_ids, [1, 2, 1])


def test_select_channels():
    r = np.array([[1.0, 2.0, 6.0], [3.0, 4.0, 8.0]])
    np.testing.assert_array_equal(select_channels(r, 1), [2.0, 4.0])
    np.testing.assert_array_equal(select_channels(r, [0, 2]), [3.5, 5.5])
    np.testing.assert_array_equal(select_channels(r, "mean"), [3.0, 5.0])
    with pytest.raises(ConfigError, match="channels 0..2"):
        select_channels(r, 5)
    with pytest.raises(ConfigError, match="valid choices"):
        select_channels(r, "max")
    with pytest.raises(ConfigError, match="has 3 channels; choose"):
        select_channels(r, None)


def test_fault_spec_errors_name_choices():
    f = Faults.parse(["drop@2,nan@4", "delay=0.5"])
    assert f.at == {2: "drop", 4: "nan"} and f.prob == {"delay": 0.5}
    with pytest.raises(ConfigError, match="valid choices: drop"):
        Faults.parse("explode@1")


def test_non_loopback_address_refused():
    with pytest.raises(ConfigError, match="not loopback"):
        make_client("zmq", address="tcp://10.0.0.1:5555")
    with pytest.raises(ConfigError, match="valid choices: zmq, filedrop"):
        make_client("carrier-pigeon")


def test_server_rejects_malformed_messages_and_keeps_serving():
    import zmq

    gen = generator()
    neu = neurons(gen)
    addr = f"tcp://127.0.0.1:{free_port()}"
    with sim_thread(neu, "zmq", addr, token="tok") as sim:
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(addr)
        bad = [[b"garbage"], encode_block(_block()),  # no mac
               encode_block(_block(), token="wrong"),
               _pack({"type": "block", "block": 1, "shape": [3, 16, 16], "dtype": "uint8"}, [b"x"], "tok")]
        reasons = []
        for frames in bad:
            s.send_multipart(frames)
            assert s.poll(5000)
            h = json.loads(s.recv_multipart()[0])
            assert h["type"] == "error"
            reasons.append(h["reason"])
        assert "not UTF-8 JSON" in reasons[0] and "no 'mac'" in reasons[1]
        assert "authentication failed" in reasons[2] and "shape" in reasons[3]
        s.close()
        ctx.term()
        # still serving a good client
        with make_client("zmq", address=addr, token="tok", timeout=5, retries=0) as cl:
            b = _block(n=2, repeats=3)
            b.images = np.ascontiguousarray(b.images)
            reply = cl.present(b)
        assert reply.responses.shape == (6, 1) and sorted(reply.image_ids.tolist()) == [100] * 3 + [101] * 3
        # a client with the wrong token gets a clear error after its retry budget
        with make_client("zmq", address=addr, token="nope", timeout=0.5, retries=1, backoff=0.01) as cl:
            with pytest.raises(RigError, match="authentication failed"):
                cl.present(_block())


def test_retry_budget_error_names_rig_and_resume():
    addr = f"tcp://127.0.0.1:{free_port()}"  # nobody listens
    t0 = time.monotonic()
    with make_client("zmq", address=addr, timeout=0.2, retries=2, backoff=0.01) as cl:
        with pytest.raises(RigError, match=r"after 3 attempts.*rerun the same command"):
            cl.present(_block())
    assert time.monotonic() - t0 < 30


def _answer(block: Block, value: float = 1.0, n: int | None = None) -> Reply:
    """What a rig answers to ``block`` (presentations in ``block.order``), cut to the first ``n`` rows."""
    ids = np.asarray(block.image_ids)[block.order][:n]
    return Reply(block.block, ids, np.full((len(ids), 1), float(value)))


def test_truncated_or_miscounted_reply_is_rejected():
    b = _block(n=3, repeats=2)  # 6 presentations
    validate_reply_for(_answer(b), b)
    assert set(_answer(b, n=4).image_ids.tolist()) == {100, 101, 102}  # every id there, 2 rows short
    with pytest.raises(ProtocolError, match=r"4 presentations, expected 6 \(3 images x 2 repeats\)"):
        validate_reply_for(_answer(b, n=4), b)
    miscounted = Reply(7, np.array([100, 100, 100, 101, 102, 102]), np.ones((6, 1)))
    with pytest.raises(ProtocolError, match="image id 100 shown 3 times, expected 2"):
        validate_reply_for(miscounted, b)
    longer = Reply(7, np.array([100, 100, 101, 101, 102, 102, 102]), np.ones((7, 1)))
    with pytest.raises(ProtocolError, match="image id 102 shown 3 times, expected 2 \\(7 presentations, expected 6"):
        validate_reply_for(longer, b)


def _write_csv_rows(path, block: Block, rows: int, run: str) -> None:
    """A CSV response of ``block`` cut at a line boundary after ``rows`` presentations (plain write)."""
    full = tmp = path.with_name("full_" + path.name)
    write_response(tmp, _answer(block), run=run)
    lines = full.read_bytes().splitlines(keepends=True)
    full.unlink()
    n_head = next(i for i, line in enumerate(lines) if line.startswith(b"image_id"))
    path.write_bytes(b"".join(lines[: n_head + 1 + rows]))


def test_filedrop_short_csv_is_waited_for_then_reported(tmp_path):
    """A CSV cut at a line boundary (4 of 6 rows, every image id present) is half-written: re-read until
    the timeout and never used; completed in time, it is used whole."""
    root = tmp_path / "drop"
    cl = FileDropClient(root, timeout=0.6, retries=0, poll=0.02, run="r1")
    b = _block(n=3, repeats=2)
    out = root / "responses" / "block_000007.csv"

    def rig(rows_first: int, complete_after: float | None) -> None:
        man = root / "blocks" / "block_000007.json"
        while not man.exists():
            time.sleep(0.01)
        _write_csv_rows(out, b, rows_first, "r1")
        if complete_after is not None:
            time.sleep(complete_after)
            write_response(out, _answer(b, 2.0), run="r1")

    th = threading.Thread(target=rig, args=(4, None))
    th.start()
    with pytest.raises(RigError, match=r"4 presentations, expected 6 \(3 images x 2 repeats\)"):
        cl.present(b)
    th.join()
    assert not out.exists() and len(list((root / "responses" / "rejected").iterdir())) == 1
    # the same file completed before the timeout is used, whole
    (root / "blocks" / "block_000007.json").unlink()
    th = threading.Thread(target=rig, args=(4, 0.2))
    th.start()
    reply = cl.present(b)
    th.join()
    assert reply.responses.shape == (6, 1) and (reply.responses == 2.0).all()


def test_csv_cut_inside_its_last_line_is_half_written(tmp_path):
    p = tmp_path / "block_000004.csv"
    write_response(p, Reply(4, np.array([400, 401]), np.array([[1.25], [12.5]])), run="r")
    data = p.read_bytes()
    p.write_bytes(data.rstrip(b"\r\n")[:-2])  # "401,12." : still parses as 12.0 without the check
    with pytest.raises(ProtocolError, match="does not end with a newline"):
        read_response(p)


@pytest.mark.parametrize("fmt", ["npz", "csv", "mat"])
def test_filedrop_ignores_stale_response_of_another_run(tmp_path, fmt, caplog):
    """A leftover response file of an earlier run (same block and image ids) is ignored; the client waits on."""
    root = tmp_path / "drop"
    b = _block(n=3, repeats=2)
    out = root / "responses" / f"block_000007.{fmt}"
    out.parent.mkdir(parents=True)
    write_response(out, _answer(b, 1e6), run="old-run")  # same block id and image ids, another run
    cl = FileDropClient(root, timeout=3.0, retries=0, poll=0.02, run="new-run")

    def rig() -> None:
        man = root / "blocks" / "block_000007.json"
        while not man.exists():
            time.sleep(0.01)
        got, run = read_block(man)
        assert run == "new-run"
        time.sleep(0.3)
        write_response(out, _answer(got, 5.0), run=run)

    th = threading.Thread(target=rig)
    th.start()
    with caplog.at_level(logging.WARNING, logger="mango.rig.filedrop"):
        reply = cl.present(b)
    th.join()
    assert (reply.responses == 5.0).all() and b.attempt == 0  # waited, no re-request needed
    assert any("old-run" in i["reason"] and "new-run" in i["reason"] for i in cl.ignored), cl.ignored
    assert "ignored" in caplog.text and "old-run" in caplog.text
    # a response that names no run at all is not taken for this run's either
    write_response(out, _answer(b, 1e6), run="")
    cl2 = FileDropClient(root, timeout=0.3, retries=0, poll=0.02, run="new-run")
    with pytest.raises(RigError, match="names no run"):
        cl2.present(b)


def test_filedrop_rewrites_stimuli_left_by_an_earlier_run(tmp_path):
    b = _block(n=2)
    write_block(tmp_path, b, run="old")
    b2 = Block(b.block, b.image_ids, 255 - b.images, b.repeats, b.order)
    write_block(tmp_path, b2, run="new")
    got, run = read_block(tmp_path / "blocks" / "block_000007.json")
    assert run == "new"
    np.testing.assert_array_equal(got.images, b2.images)  # the rig shows this run's images


def test_zmq_short_reply_is_rejected_and_the_block_resent():
    def answer(server, peer, blk, k):
        server.send_reply(peer, _answer(blk, 3.0, n=4 if k == 0 else None))  # first answer truncated

    with scripted_rig(answer) as (addr, _):
        with make_client("zmq", address=addr, timeout=2.0, retries=2, backoff=0.01) as cl:
            reply = cl.present(_block(n=3, repeats=2))
    assert reply.responses.shape == (6, 1)
    assert any("4 presentations, expected 6" in i["reason"] for i in cl.ignored), cl.ignored


def test_zmq_unsigned_error_is_ignored_when_a_token_is_set():
    """With a shared token, an unsigned (forged) error message must not abort the block attempt."""
    from mango.rig.protocol import encode_error

    def answer(server, peer, blk, k):
        server.send_raw(peer, encode_error("forged: rig on fire", blk.block))   # no MAC
        server.send_reply(peer, _answer(blk, 3.0))                              # signed, valid

    with scripted_rig(answer, token="s3cret") as (addr, _):
        with make_client("zmq", address=addr, token="s3cret", timeout=2.0, retries=0, backoff=0.01) as cl:
            reply = cl.present(_block(n=3, repeats=2))
    assert reply.responses.shape == (6, 1)
    assert any("unauthenticated error" in i["reason"] for i in cl.ignored), cl.ignored
