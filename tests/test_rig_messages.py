"""What the rig side of MANGO tells the user when something is wrong (hostile-input audit): each test
here fails on the code before the fix.

1. A peer that answers every block with garbage (bad bytes, a JSON list, an echo of the request) was
   reported as "no reply within 1 s ... Start or fix the rig": the failure of each attempt now counts
   and names the ignored replies, and the error says something answers but not in ``mango-rig/1``.
2. ``tcp://127.0.0.1:99999`` (a port out of range) was accepted (ZeroMQ connects to it without
   complaint) and failed later as "no reply": it is now a one-line ConfigError naming the valid forms.
3. A budget eaten by the hold-out reservation said "budget 300 is too small for one block (repeats=2,
   references=0)", without naming the reservation; and a batch cut to the budget was worded in
   "queries" where a rig counts presentations and images.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import zmq

from mango.cli import main
from mango.errors import ConfigError
from mango.rig import make_client
from mango.rig.closedloop import closed_loop
from mango.rig.protocol import Block, Reply, RigError
from mango.rig.zmq_transport import ZmqRigClient, ZmqRigServer, check_address

from _rig_helpers import fake_router, free_port, generator


def _block(n=2, repeats=1, bid=0):
    imgs = np.zeros((n, 8, 8, 1), dtype=np.uint8)
    return Block(bid, np.arange(n), imgs, repeats, np.repeat(np.arange(n), repeats))


def _failure(addr) -> str:
    with make_client("zmq", address=addr, timeout=0.25, retries=1, backoff=0.05) as cl:
        with pytest.raises(RigError) as info:
            cl.present(_block())
    return str(info.value)


# -- 1: garbage replies are counted and named in the failure ------------------------------
@pytest.mark.parametrize("answer, kind, detail", [
    (lambda frames: [b"\xff\x00 not json"], "malformed", "not UTF-8 JSON"),
    (lambda frames: [b"[1, 2, 3]"], "malformed", "must be a JSON object, got list"),
    (lambda frames: list(frames), "unexpected type", "an echo of the request"),
], ids=["bad-bytes", "json-list", "echo"])
def test_garbage_replies_are_counted_and_named_in_each_attempt(answer, kind, detail):
    with fake_router(answer) as addr:
        msg = _failure(addr)
    for attempt in (0, 1):
        assert f"attempt {attempt}: 1 reply ignored ({kind}: " in msg, msg
    assert detail in msg and "no valid reply within" in msg, msg
    assert "no reply within" not in msg and "but not in mango-rig/1" in msg, msg


def test_a_silent_rig_still_says_no_reply():
    with fake_router(lambda frames: []) as addr:   # answers nothing (an empty multipart is not sent)
        pass
    msg = _failure(addr)                              # nobody listens any more
    assert "attempt 0: no reply within 0.25 s" in msg and "ignored" not in msg and "Start or fix the rig" in msg


def test_an_invalid_reply_is_the_failure_not_one_more_ignored_reply():
    def answer(frames):
        head = json.loads(frames[0])
        out = {"protocol": "mango-rig", "version": 1, "type": "response", "block": head["block"],
               "image_ids": [0], "shape": [1, 1], "dtype": "float64", "nonce": head["nonce"]}
        return [json.dumps(out).encode(), np.zeros(1).tobytes()]    # 1 presentation of 2

    with fake_router(answer) as addr:
        msg = _failure(addr)
    assert "attempt 0: invalid reply: " in msg and "ignored" not in msg, msg


# -- 2: endpoint form checked at the start ------------------------------------------------
@pytest.mark.parametrize("address, needle", [
    ("tcp://127.0.0.1:99999", "port '99999'"), ("tcp://127.0.0.1:0", "port '0'"),
    ("tcp://127.0.0.1:x", "port 'x'"), ("tcp://127.0.0.1", "no HOST:PORT"), ("tcp://:5555", "no HOST:PORT"),
    ("udp://127.0.0.1:5555", "transport 'udp'"), ("ipc://", "empty"),
])
def test_a_bad_endpoint_is_one_config_error_naming_the_valid_forms(address, needle):
    with pytest.raises(ConfigError) as info:
        ZmqRigClient(address)
    msg = str(info.value)
    assert repr(address) in msg and needle in msg and "tcp://HOST:PORT with PORT 1..65535" in msg, msg
    assert "ipc://PATH" in msg and "\n" not in msg
    if address != "tcp://127.0.0.1:0":     # binding port 0 (or '*') asks for a free port
        with pytest.raises(ConfigError):
            ZmqRigServer(address)


def test_good_endpoints_still_pass():
    for a in ("tcp://127.0.0.1:1", "tcp://localhost:65535", "tcp://[::1]:5555", "ipc:///tmp/rig", "inproc://rig"):
        assert check_address(a) == a
    assert check_address("tcp://*:5555", allow_remote=True, bind=True)
    assert check_address("tcp://127.0.0.1:*", bind=True)
    with pytest.raises(ConfigError, match="no HOST:PORT"):
        check_address("tcp://*:5555", allow_remote=True)        # '*' is for binding only


def test_rig_run_refuses_a_bad_port_before_making_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["rig-run", "--address", "tcp://127.0.0.1:99999", "--timeout", "0.2", "--retries", "0", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "'tcp://127.0.0.1:99999'" in err and "1..65535" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


# -- 3: the budget message names the hold-out reservation ---------------------------------
class _Rig:
    """Answers every block with ones; counts the blocks."""

    def __init__(self) -> None:
        self.blocks = 0

    def present(self, block: Block) -> Reply:
        self.blocks += 1
        ids = np.asarray(block.image_ids)[block.order]
        return Reply(block.block, ids, np.ones((len(ids), 1)))


def test_a_budget_eaten_by_the_holdout_names_the_reservation_and_what_fits():
    rig = _Rig()
    with pytest.raises(ConfigError) as info:
        closed_loop(rig, generator(), "random", 300, batch_size=20, repeats=2, holdout_repeats=400)
    msg = str(info.value)
    assert "budget 300 presentations is too small" in msg and "holdout_repeats=400" in msg, msg
    assert "420 presentations are reserved" in msg and "confirm_top=5 x confirm_repeats=4 = 20" in msg, msg
    assert "at least 422" in msg and "460 for a first block of batch_size 20" in msg, msg
    assert rig.blocks == 0 and "\n" not in msg


def test_rig_run_budget_error_leaves_no_run_id(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["rig-run", "--address", f"tcp://127.0.0.1:{free_port()}", "--budget", "300", "--batch-size", "20",
            "--repeats", "2", "--holdout-repeats", "400", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holdout_repeats=400" in err and "at least 422" in err, err
    assert not (out / "rig_run_id").exists()


def test_a_batch_cut_to_the_budget_is_worded_in_presentations_and_images(caplog):
    rig = _Rig()
    with caplog.at_level(logging.WARNING):
        res = closed_loop(rig, generator(), "random", 200, batch_size=20, repeats=200, confirm_top=0,
                          holdout_repeats=0)
    text = " | ".join(r.getMessage() for r in caplog.records if "batch_size" in r.getMessage())
    assert "budget of 200 presentations" in text and "repeats=200" in text and "1 image at most" in text, text
    assert "queries" not in text and res.presentations == 200


def test_a_late_answer_to_the_first_send_is_recorded_as_attempt_0():
    """The rig answered the first send only once the resend had gone out: the answer was taken (rightly), but
    the block said attempt 1, which the presentation log then recorded."""
    first: list[str] = []

    def answer(frames):
        head = json.loads(frames[0])
        if head.get("attempt") == 0:
            first.append(head["nonce"])
            return []                                   # still presenting: no answer yet
        out = {"protocol": "mango-rig", "version": 1, "type": "response", "block": head["block"],
               "image_ids": [0, 1], "shape": [2, 1], "dtype": "float64", "nonce": first[0]}
        return [json.dumps(out).encode(), np.array([3.0, 4.0]).tobytes()]

    block = _block()
    with fake_router(answer) as addr:
        with make_client("zmq", address=addr, timeout=0.3, retries=2, backoff=0.05) as cl:
            reply = cl.present(block)
    assert reply.nonce == first[0] and block.attempt == 0
