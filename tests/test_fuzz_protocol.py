"""Property-based fuzzing of the rig wire decoders (issue 13, fuzzing): whatever bytes arrive, the
decoders raise nothing but :class:`ProtocolError` and allocate nothing beyond the limits.

CI runs the ``ci`` profile (few examples, a few seconds); ``HYPOTHESIS_PROFILE=deep`` runs many more.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mango.rig.protocol import (Block, ProtocolError, Reply, decode_block, decode_error, decode_reply,
                                encode_block, encode_reply, peek_header)

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TOKEN = "s3cret"
DECODERS = (decode_block, decode_reply, decode_error)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40)

FIELDS = ("protocol", "version", "type", "block", "attempt", "image_ids", "shape", "dtype", "encoding",
          "repeats", "order", "nonce", "mac", "reason")


def _only_protocol_errors(frames: list[bytes], token: str | None) -> None:
    for decode in DECODERS:
        try:
            decode(frames, token=token)
        except ProtocolError:
            pass


@given(st.lists(st.binary(max_size=2000), min_size=0, max_size=4), st.sampled_from([None, TOKEN]))
def test_random_bytes(frames, token):
    _only_protocol_errors(frames, token)


@given(json_values, st.lists(st.binary(max_size=200), max_size=3), st.sampled_from([None, TOKEN]))
def test_random_json(value, rest, token):
    _only_protocol_errors([json.dumps(value).encode()] + rest, token)


@given(st.integers(1, 20000), st.sampled_from("[{"))
def test_arbitrary_nesting(depth, bracket):
    close = "]" if bracket == "[" else "}"
    body = (bracket if bracket == "[" else '{"a":') * depth
    text = body + ("0" if bracket == "{" else "") + close * depth
    _only_protocol_errors([text.encode()], None)


@st.composite
def valid_looking(draw):
    """A header with the right protocol/version/type whose other fields have random types and values,
    including huge declared sizes."""
    kind = draw(st.sampled_from(["block", "response", "error"]))
    head = {"protocol": "mango-rig", "version": 1, "type": kind}
    for key in draw(st.lists(st.sampled_from(FIELDS[3:]), unique=True, max_size=len(FIELDS) - 3)):
        head[key] = draw(json_values | st.integers(0, 10**12) |
                         st.lists(st.integers(-2, 10**9), max_size=6))
    if draw(st.booleans()):
        head["shape"] = draw(st.lists(st.integers(-1, 10**7), min_size=2, max_size=4))
    return head


@given(valid_looking(), st.lists(st.binary(max_size=300), max_size=3), st.sampled_from([None, TOKEN]))
def test_valid_looking_headers_with_wrong_types(head, rest, token):
    _only_protocol_errors([json.dumps(head).encode()] + rest, token)


@given(st.integers(0, 10), st.integers(1, 4), st.integers(1, 3))
def test_valid_messages_survive_single_byte_damage(pos_seed, n, repeats):
    rng = np.random.default_rng(pos_seed)
    blk = Block(3, np.arange(n), rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8), repeats, None,
                nonce="abcdef0123456789")
    reply = Reply(3, np.repeat(np.arange(n), repeats), rng.random((n * repeats, 2)), nonce="abcdef0123456789")
    for frames in (encode_block(blk, token=TOKEN), encode_reply(reply, token=TOKEN)):
        raw = bytearray(frames[0])
        i = int(rng.integers(len(raw)))
        raw[i] = int(rng.integers(256))
        _only_protocol_errors([bytes(raw)] + frames[1:], TOKEN)


def test_huge_declared_sizes_are_refused_before_allocation():
    head = {"protocol": "mango-rig", "version": 1, "type": "block", "block": 0, "shape": [10**6, 10**6, 10**6, 3],
            "image_ids": [0], "dtype": "uint8", "encoding": "raw", "repeats": 1}
    with pytest.raises(ProtocolError, match="images"):
        decode_block([json.dumps(head).encode(), b"\0" * 10])
    head = {"protocol": "mango-rig", "version": 1, "type": "response", "block": 0, "shape": [10**9, 10**9],
            "image_ids": [0], "dtype": "float64"}
    with pytest.raises(ProtocolError, match="limits"):
        decode_reply([json.dumps(head).encode(), b"\0" * 8])


def test_peek_header_rejects_every_non_object():
    for value in ([], 1, "x", None, [[{}]]):
        try:
            peek_header([json.dumps(value).encode()])
        except ProtocolError:
            continue
        raise AssertionError(f"accepted {value!r}")


def test_non_ascii_mac_is_an_auth_error():
    """Hypothesis's falsifying example: a block header whose 'mac' is a non-ASCII string raised a
    TypeError from hmac.compare_digest instead of the protocol's authentication error."""
    from mango.rig.protocol import AuthError
    head = {"protocol": "mango-rig", "version": 1, "type": "block", "block": 0, "attempt": None,
            "image_ids": 0, "mac": "\x80", "shape": 0}
    with pytest.raises(AuthError, match="not a hex digest"):
        decode_block([json.dumps(head).encode()], token=TOKEN)
