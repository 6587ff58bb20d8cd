"""mango-rig/1 wire format, file formats and the socket server's rejection of malformed messages."""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from mango.errors import ConfigError
from mango.rig import make_client
from mango.rig.closedloop import select_channels
from mango.rig.filedrop import read_response, write_response
from mango.rig.protocol import (_pack, Block, Limits, ProtocolError, Reply, RigError, decode_block, decode_reply,
                                encode_block, encode_reply)
from mango.rig.simulator import Faults

from _rig_helpers import free_port, generator, neurons, sim_thread


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
    if fmt != "csv":
        assert meta == {"block": 4, "run": "run1"}
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
    with pytest.raises(ConfigError, match="records 3 channels"):
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
