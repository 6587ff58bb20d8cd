"""Property-based tests (Hypothesis) of three readers added for hostile input: ``mango report`` on a damaged
run folder, a rig endpoint's address, and a scan's ``units``.

Properties: only the project's own error types (:class:`~mango.errors.MangoError`, which ``ConfigError``
extends) escape; a report of a compare folder whose one run is damaged still reports the others and lists
the damaged one; the readers never change the files they read. Before, a truncated ``result.json`` or
``history.npz`` ended the whole report in a raw JSONDecodeError / BadZipFile, a port out of range was
accepted, and ``0-100000000`` built the whole list.

CI runs a few hundred examples in all (seconds); ``HYPOTHESIS_PROFILE=deep`` runs many more.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mango.compare import run_compare
from mango.errors import ConfigError, MangoError
from mango.report import load_traces, write_report
from mango.rig.zmq_transport import check_address
from mango.scan import parse_units

_DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
FUZZ = settings(max_examples=1500 if _DEEP else 60, deadline=None, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

GRID = {"name": "fz", "budget": 30, "seeds": [0, 1], "batch_size": 10,
        "problems": [{"name": "separable", "d": 4, "n": 8}], "optimizers": [{"name": "random"}]}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "grid"
    run_compare(GRID, out, workers=1)
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "report" not in p.parts:
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def _damage(data: bytes, how: str, cut: float, junk: bytes) -> bytes:
    if how == "truncate":
        return data[: int(len(data) * cut)]
    if how == "replace":
        return junk
    if how == "flip" and data:
        i = int(cut * (len(data) - 1))
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return data + junk


@FUZZ
@given(name=st.sampled_from(["result.json", "history.npz"]), how=st.sampled_from(["truncate", "replace", "flip", "append"]),
       cut=st.floats(0, 1), junk=st.binary(max_size=64))
def test_a_damaged_run_never_ends_the_report_in_a_raw_error(grid, name, how, cut, junk):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "g"
        shutil.copytree(grid, work)
        runs = sorted(p.parent for p in work.glob("runs/*/*/*/result.json"))
        target = runs[0] / name
        target.write_bytes(_damage(target.read_bytes(), how, cut, junk))
        before = _digest(work)
        try:
            manifest, traces = load_traces(work)
        except MangoError:
            return
        assert len(traces) + len(manifest["skipped"]) == len(runs)        # every run reported or listed
        assert any(Path(t.extra["folder"]) == runs[1] for t in traces)    # the sound run is still reported
        try:
            write_report(work, Path(tmp) / "rep")
        except MangoError:
            pass
        assert _digest(work) == before                                    # the report only reads


@FUZZ
@given(st.text(max_size=40) | st.from_regex(r"tcp://[a-z0-9.\[\]:*]{0,20}:-?[0-9*]{0,7}", fullmatch=True))
@example("tcp://127.0.0.1:99999")             # accepted, then reported as 'no reply'
def test_a_rig_address_is_taken_or_refused_in_one_line(text):
    for bind in (False, True):
        try:
            out = check_address(text, allow_remote=True, bind=bind)
        except ConfigError as exc:
            assert "\n" not in str(exc) and repr(text) in str(exc)
        else:
            assert out == text and text.split("://", 1)[0] in ("tcp", "ipc", "inproc")
            if text.startswith("tcp://"):                                 # a port ZeroMQ could never reach
                port = text.rpartition(":")[2]
                assert (bind and port in ("*", "0")) or (port.isdigit() and 1 <= int(port) <= 65535)


@FUZZ
@given(text=st.text(alphabet="0123456789-, all", max_size=30), size=st.none() | st.integers(1, 5000))
@example(text="0-100000000", size=None)       # built 7.8 GB before the range was checked
@example(text="5-100000", size=10)
@example(text="0-200000", size=None)
def test_units_are_parsed_or_refused_without_building_huge_lists(text, size):
    try:
        units = parse_units(text, size)
    except ConfigError as exc:
        assert len(str(exc)) < 400
    else:
        assert units and len(units) <= (size if size is not None else 100_000)
        assert len(set(units)) == len(units)
        if size is not None:
            assert all(0 <= u < size for u in units)
