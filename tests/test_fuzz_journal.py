"""Property-based tests (Hypothesis) of reading a damaged run folder: the journal, the rig's presentation log
and the optimizer checkpoint (issue 13, fuzzing).

Damage: random byte flips, truncation, inserted garbage lines, duplicated lines, a garbage tail. Properties:

* only the project's own error types (:class:`~mango.errors.MangoError`, which ``ConfigError`` extends) escape;
* nothing is discarded except a torn last line (bytes after the last newline): a reader that succeeds
  returns one row per complete line, and resuming changes the file by at most cutting that tail;
* a refused file is left byte for byte as it was, and reading never makes a folder unresumable:
  after a successful open, opening again gives the same rows and appending works;
* an unreadable checkpoint is ignored (the run replays from the journal), never raised.

CI runs a few hundred examples in all (a few seconds); ``HYPOTHESIS_PROFILE=deep`` runs many more
(settings are per test, so other modules' profiles are not affected).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mango.errors import MangoError
from mango.journal import Journal, read_journal, save_state
from mango.rig.closedloop import PresentationLog

_DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
FUZZ = settings(max_examples=3000 if _DEEP else 120, deadline=None, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _clean_journal() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal.open(tmp)
        rng = np.random.default_rng(0)
        for b in range(5):
            k = 1 + b % 3
            j.append(rng.integers(0, 7, size=(k, 4)), rng.normal(size=k), 0.1 * b, external=b % 2,
                     extra={"block": b} if b % 2 else None)
        j.close()
        return (Path(tmp) / "journal.jsonl").read_bytes()


def _clean_plog() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        plog = PresentationLog(Path(tmp) / "p.jsonl")
        for b in range(4):
            plog.append({"ev": "sent", "block": b, "codes": [[b, 1]], "order": [0, 0]})
            plog.append({"ev": "response", "block": b, "attempt": 0, "image_ids": [b, b],
                         "responses": [[1.0], [2.0]]})
        plog.close()
        return (Path(tmp) / "p.jsonl").read_bytes()


CLEAN = _clean_journal()
CLEAN_PLOG = _clean_plog()


@st.composite
def damaged(draw: st.DrawFn, clean: bytes) -> bytes:
    """``clean`` with one to three kinds of damage applied in turn."""
    data = bytearray(clean)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "tail", "drop_newline"]))
        lines = bytes(data).split(b"\n")
        if kind == "flip" and data:
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "insert":
            i = draw(st.integers(0, len(lines)))
            junk = draw(st.one_of(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
                                  st.sampled_from([b"{}", b"[]", b"null", b'{"batch": 0}', b"[" * 3000,
                                                   b'{"batch": 1, "I": [[1e400]], "y": [1]}'])))
            lines.insert(i, junk)
            data = bytearray(b"\n".join(lines))
        elif kind == "duplicate" and len(lines) > 1:
            i = draw(st.integers(0, len(lines) - 2))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif kind == "tail":
            data += draw(st.binary(max_size=40))
        elif kind == "drop_newline" and b"\n" in data:
            nl = [i for i, c in enumerate(data) if c == 10]
            del data[draw(st.sampled_from(nl))]
    return bytes(data)


def _torn_cut(raw: bytes) -> bytes:
    """``raw`` without the bytes after its last newline (what cutting a torn last line leaves)."""
    return raw[: raw.rfind(b"\n") + 1]


def _check_reader_contract(raw: bytes, after: bytes, n_rows: int) -> None:
    assert after in (raw, _torn_cut(raw)), "reading changed more than a torn last line"
    assert n_rows == after.count(b"\n"), "a complete line was discarded"


@FUZZ
@given(damaged(CLEAN))
def test_journal_reading_survives_any_damage(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.jsonl"
        path.write_bytes(raw)
        try:
            rows = read_journal(tmp)
        except MangoError:
            rows = None
        assert path.read_bytes() == raw, "read_journal must never write"
        try:
            j = Journal.open(tmp)
        except MangoError as exc:
            assert "line" in str(exc)
            assert path.read_bytes() == raw, "a refused journal must be left as it was"
            assert rows is None, "read_journal accepted what resuming refuses"
            return
        after = path.read_bytes()
        _check_reader_contract(raw, after, len(j.rows))
        assert rows is not None and len(rows) == len(j.rows)
        for i, row in enumerate(j.rows):
            assert row.batch == i and row.I.ndim == 2 and row.I.shape[0] == row.y.shape[0]
            assert np.isfinite(row.y).all() and row.external >= 0
        j.append(np.zeros((1, 4), dtype=np.int64), np.array([0.5]), 1.0)
        j.close()
        j2 = Journal.open(tmp)  # never made unresumable by reading
        assert len(j2.rows) == len(rows) + 1
        j2.close()


@FUZZ
@given(damaged(CLEAN))
def test_truncation_only_keeps_every_complete_row(raw_damage):
    # a pure truncation of a clean journal is a torn write: always resumable, keeps every complete row
    cut = len(raw_damage) % (len(CLEAN) + 1)
    raw = CLEAN[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "journal.jsonl").write_bytes(raw)
        j = Journal.open(tmp)
        j.close()
        assert len(j.rows) == raw.count(b"\n")
        clean = read_journal_bytes(CLEAN)
        for a, b in zip(j.rows, clean):
            np.testing.assert_array_equal(a.I, b.I)
            np.testing.assert_array_equal(a.y, b.y)


def read_journal_bytes(raw: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "journal.jsonl").write_bytes(raw)
        return read_journal(tmp)


@FUZZ
@given(damaged(CLEAN_PLOG))
def test_presentation_log_survives_any_damage(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        path.write_bytes(raw)
        try:
            plog = PresentationLog(path)
        except MangoError:
            assert path.read_bytes() == raw, "a refused log must be left as it was"
            return
        plog.append({"ev": "sent", "block": 99, "codes": [], "order": []})
        plog.close()
        after = path.read_bytes()
        kept = after[: after.rfind(b"\n", 0, len(after) - 1) + 1]  # without the line just appended
        assert kept in (raw, _torn_cut(raw)), "reading changed more than a torn last line"
        n_lines = kept.count(b"\n")
        assert len(plog.sent) + len(plog.responses) - 1 <= n_lines
        PresentationLog(path).close()  # still readable


@FUZZ
@given(st.data())
def test_damaged_checkpoint_is_ignored_never_raised(data):
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal.open(tmp)
        j.save_checkpoint(3, {"x": np.arange(6.0), "n": 2, "nested": [{"a": np.ones(2)}]})
        path = Path(tmp) / "checkpoint.npz"
        raw = bytearray(path.read_bytes())
        if data.draw(st.booleans()):
            del raw[data.draw(st.integers(0, len(raw))):]
        for _ in range(data.draw(st.integers(0, 3))):
            i = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
            if raw:
                raw[i] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
        ck = j.load_checkpoint()
        j.close()
        assert ck is None or (ck[0] == 3 and isinstance(ck[1], dict))


def test_a_checkpoint_save_state_round_trip_is_exact(tmp_path):
    state = {"x": np.arange(6.0), "n": 2, "nested": [{"a": np.ones(2)}]}
    save_state(tmp_path / "s.npz", state)
    j = Journal.open(tmp_path)
    j.save_checkpoint(1, state)
    batch, back = j.load_checkpoint()
    j.close()
    assert batch == 1 and back["n"] == 2
    np.testing.assert_array_equal(back["x"], state["x"])
