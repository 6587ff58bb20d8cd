"""XDream-compatible file drop: files in XDream's EPhysScorer convention, a closed loop with faults,
hostile .mat files refused, and a fuzzed .mat reader."""
from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mango.rig.closedloop import PresentationLog, closed_loop
from mango.rig.protocol import Block, Limits, ProtocolError, RigError
from mango.rig.xdream import (STIMULUS_NAME, XDreamClient, read_xdream_mat, stimulus_name,
                              write_xdream_mat)

from _rig_helpers import generator, neurons, sim_thread

NAMES = ["block004_00_gen002_200001.bmp", "block004_01_gen002_200000.bmp", "block004_00_gen002_200001.bmp"]
RESP = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])  # [P=3, channels=2]


def _matlab_v73(names, resp_matlab, *, header=True, ref_shape=None) -> bytes:
    """A file as MATLAB's ``save -v7.3`` lays it out, built by hand (independent of the module's writer):
    char cells in ``#refs#`` as uint16 [L, 1], stimulusID refs [1, P] (MATLAB {P x 1}), tEvokedResp
    stored transposed (MATLAB [channels x P] -> HDF5 [P, channels])."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512) as f:
        g = f.create_group("#refs#")
        refs = np.empty((1, len(names)), dtype=h5py.ref_dtype)
        for i, n in enumerate(names):
            d = g.create_dataset(chr(97 + i), data=np.array([ord(c) for c in n], dtype=np.uint16)[:, None])
            d.attrs["MATLAB_class"] = np.bytes_("char")
            d.attrs["MATLAB_int_decode"] = np.int32(2)
            refs[0, i] = d.ref
        s = f.create_dataset("stimulusID", data=refs.reshape(ref_shape) if ref_shape else refs)
        s.attrs["MATLAB_class"] = np.bytes_("cell")
        r = f.create_dataset("tEvokedResp", data=np.asarray(resp_matlab, dtype=np.float64).T)
        r.attrs["MATLAB_class"] = np.bytes_("double")
    data = bytearray(buf.getvalue())
    if header:
        text = b"MATLAB 7.3 MAT-file, Platform: PCWIN64, Created on: Mon Jan 6 10:00:00 2020 HDF5 schema 1.00 ."
        data[:128] = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"  # 116 text, subsys offset, v0x0200, IM
    return bytes(data)


def _matlab_v5(names, resp_matlab, compress=True, **extra) -> bytes:
    cell = np.empty((len(names), 1), dtype=object)
    cell[:, 0] = names
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"stimulusID": cell, "tEvokedResp": np.asarray(resp_matlab), **extra}, format="5",
                     do_compression=compress)
    return buf.getvalue()


# -- the convention --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: _matlab_v73(NAMES, RESP.T),
    lambda: _matlab_v73(NAMES, RESP.T, header=False),             # plain HDF5 (h5py-written, no MATLAB header)
    lambda: _matlab_v5(NAMES, RESP.T, compress=True),            # MATLAB's default save (-v7)
    lambda: _matlab_v5(NAMES, RESP.T, compress=False),           # save -v6
    lambda: _matlab_v5([f"C:\\rig\\stim\\{n}" for n in NAMES], RESP.T),  # full Windows paths in stimulusID
    lambda: _matlab_v73([f"/data/stim/{n}" for n in NAMES], RESP.T, ref_shape=(3, 1)),  # MATLAB {1 x P} cell
], ids=["v73", "hdf5-no-header", "v5-compressed", "v5", "v5-windows-paths", "v73-row-cell"])
def test_files_in_xdream_convention_are_read(make):
    names, resp = read_xdream_mat(make())
    assert names == NAMES
    np.testing.assert_array_equal(resp, RESP)  # [P, channels]: row i answers stimulusID{i}


def test_responses_stored_presentations_by_channels_are_accepted_where_unambiguous():
    names, resp = read_xdream_mat(_matlab_v5(NAMES, RESP))  # MATLAB [P x channels]
    np.testing.assert_array_equal(resp, RESP)
    with pytest.raises(ProtocolError, match="tEvokedResp is 2 x 2 but stimulusID names 3"):
        read_xdream_mat(_matlab_v5(NAMES, np.ones((2, 2))))


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_writer_matches_what_xdreams_reader_expects(tmp_path, version):
    p = tmp_path / "block004.mat"
    write_xdream_mat(p, NAMES, RESP, version)
    if version == "7.3":
        assert p.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and p.read_bytes()[512:520] == b"\x89HDF\r\n\x1a\n"
        with h5py.File(p, "r") as f:  # what EPhysScorer's load_block_mat does: refs row 0, chars, (imgs, channels)
            refs = np.array(f["stimulusID"])[0]
            ids = ["".join(chr(c) for c in np.array(f[r]).reshape(-1)).split("\\")[-1] for r in refs]
            scores = np.array(f["tEvokedResp"])
        assert ids == NAMES and scores.shape == (3, 2)
        np.testing.assert_array_equal(scores, RESP)
    else:
        d = scipy.io.loadmat(p)  # MATLAB-side shapes: {P x 1} cell, [channels x P]
        assert d["stimulusID"].shape == (3, 1) and d["tEvokedResp"].shape == (2, 3)
    assert read_xdream_mat(p)[0] == NAMES


def _block(n=3, repeats=2, c=3, bid=2):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (n, 12, 10, c), dtype=np.uint8)
    order = rng.permutation(np.repeat(np.arange(n), repeats))
    return Block(bid, bid * 100_000 + np.arange(n), imgs, repeats, order)


@pytest.mark.parametrize("c", [1, 3])
def test_client_writes_bmps_as_ephys_scorer_and_maps_names_back(tmp_path, c):
    """A scripted rig: checks the BMP names and pixels, answers each XDream block once per image in its
    own order with full paths; repeats=2 -> two XDream blocks (000, 001), images cleaned up after each."""
    b = _block(c=c)
    seen: list[list[str]] = []
    expected: dict[int, list[float]] = {}

    def rig():
        for xb in range(2):
            while True:
                files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f"block{xb:03d}_"))
                if len(files) == 3:
                    break
                time.sleep(0.01)
            seen.append(files)
            shown = files[::-1]
            for slot, name in enumerate(files):
                m = STIMULUS_NAME.match(name)
                assert m and int(m.group(1)) == xb and int(m.group(2)) == slot
                iid = int(m.group(3).split("_")[1])
                img = iio.imread(tmp_path / name)
                np.testing.assert_array_equal(img.reshape(b.images[0].shape), b.images[iid - 200_000])
            values = np.array([[float(xb * 10 + k) for k in range(3)]])  # MATLAB [channels x P]
            for k, name in enumerate(shown):
                expected.setdefault(200_000 + int(name[-5]), []).append(float(xb * 10 + k))
            (tmp_path / f"block{xb:03d}.mat").write_bytes(_matlab_v73([f"D:\\xdream\\{n}" for n in shown], values))
            while any(p.name.startswith(f"block{xb:03d}_") for p in tmp_path.iterdir()):
                time.sleep(0.01)  # XDream deletes a block's BMPs once its .mat is read

    th = threading.Thread(target=rig)
    th.start()
    cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01)
    reply = cl.present(b)
    th.join()
    assert reply.block == 2 and reply.responses.shape == (6, 1)
    assert sorted(reply.image_ids.tolist()) == [200000, 200000, 200001, 200001, 200002, 200002]
    for iid, vals in expected.items():  # each response row went to the image its stimulusID names
        assert sorted(reply.responses[reply.image_ids == iid, 0].tolist()) == sorted(vals)
    assert all(m.endswith(".bmp") and "_gen002_2000" in m for m in seen[0])
    # the slots follow the block's presentation order: first round = first occurrence of each image
    first = [int(i) for i in dict.fromkeys(b.order.tolist())]
    assert [int(STIMULUS_NAME.match(n).group(3)[-1]) for n in seen[0]] == first
    assert not list(tmp_path.glob("*.bmp")) and cl.next_block == 2
    assert XDreamClient(tmp_path).first_free_block() == 2  # a new client continues the numbering


def test_timeout_error_names_the_file_it_waits_for(tmp_path):
    resp = tmp_path / "scores"
    cl = XDreamClient(tmp_path / "stim", response_folder=resp, timeout=0.2, retries=1, backoff=0.01, poll=0.02)
    with pytest.raises(RigError, match=r"no block000\.mat in .*scores within .*no block001\.mat") as ei:
        cl.present(_block(repeats=1))
    assert "block001.mat" in str(ei.value) and "rerun the same command" in str(ei.value)
    assert not list((tmp_path / "stim").glob("*.bmp"))


def test_repeats_not_a_multiple_of_shows_take_one_more_xdream_block(tmp_path):
    """repeats=3 at shows=2 was refused, and the hold-out block (10 repeats) or a budget's leftover made every
    `rig-run --shows 3` fail at its last block, after the whole search; it is now two XDream blocks, the
    second's extra showing not used."""
    gen = generator()
    neu = neurons(gen)
    b = _block(n=4, repeats=3, c=1)
    b.images = np.ascontiguousarray(np.repeat(np.repeat(b.images[:, :8, :8], 2, axis=1), 2, axis=2))  # 16x16 grey
    with xdream_rig(neu, tmp_path, version="5", shows=2, settle=0.02) as sim:
        cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, shows=2)
        reply = cl.present(b)
    assert sim.n_requests == 2 == cl.next_block
    assert np.bincount(reply.image_ids - 200_000).tolist() == [3, 3, 3, 3]
    assert "4 presentations beyond the 3 per image needed" in cl.ignored[0]["reason"]


# -- closed loop against the simulator -------------------------------------------------------------
def xdream_rig(neu, folder, faults=None, **kw):
    return sim_thread(neu, "xdream", folder, faults, server_kw=kw)


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_closed_loop_over_xdream_files_with_faults(tmp_path, version):
    gen = generator()
    neu = neurons(gen)
    folder = tmp_path / "xdream"
    with xdream_rig(neu, folder, faults="nan@2,malformed@3,duplicate@4,drop@5,wrongblock@6",
                    version=version, settle=0.05) as sim:
        cl = XDreamClient(folder, timeout=1.0, retries=4, backoff=0.05, poll=0.02)
        res = closed_loop(cl, gen, "ga", 160, seed=0, batch_size=10, repeats=2, run_dir=tmp_path / "run")
    plog = PresentationLog(tmp_path / "run" / "presentations.jsonl")
    plog.close()
    assert sorted(plog.responses) == list(range(res.blocks))
    assert sum(len(plog.responses[g]["image_ids"]) for g in plog.responses) == 160 == res.presentations
    # every XDream block served once; 4 faults cost one more XDream block each (duplicate: completed in time)
    xblocks = sum(plog.sent[g]["repeats"] for g in plog.sent)  # shows=1: one XDream block per repeat
    assert sim.n_requests == xblocks + 4 and cl.next_block == xblocks + 4
    rejected = sorted(p.name for p in (folder / "rejected").iterdir())
    assert [r.split(".")[0] for r in rejected] == ["block001", "block002", "block005"], rejected  # nan, garbage, wrong
    reasons = [i["reason"] for i in cl.ignored]
    assert "holds nan" in reasons[0] and "shorter than a MAT-file header" in reasons[1], reasons
    assert "did not show" in reasons[2], reasons
    assert len(list(folder.glob("block*.mat"))) == xblocks  # answered blocks' files stay, as in XDream
    assert not list(folder.glob("*.bmp"))


# -- hostile files ---------------------------------------------------------------------------------
def _v5_with_dims(dims: tuple[int, int]) -> bytes:
    """An uncompressed v5 file whose tEvokedResp declares ``dims`` (the data stays small)."""
    data = bytearray(_matlab_v5(NAMES, RESP.T, compress=False))
    i = data.index(struct.pack("<ii", 2, 3))  # tEvokedResp's dims [2 x 3]
    data[i:i + 8] = struct.pack("<ii", *dims)
    return bytes(data)


def _v5_bomb(inflated: int) -> bytes:
    """A v5 file with one compressed element inflating to ``inflated`` bytes (a miMATRIX of zeros)."""
    head = _matlab_v5(NAMES, RESP.T, compress=False)[:128]
    body = struct.pack("<II", 14, inflated - 8) + b"\x00" * (inflated - 8)
    z = zlib.compress(body, 9)
    return head + struct.pack("<II", 15, len(z)) + z


def _h5(build) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def _refs(f, names):
    refs = np.empty((1, len(names)), dtype=h5py.ref_dtype)
    for i, n in enumerate(names):
        refs[0, i] = f.create_dataset(f"#refs#/{i}", data=np.array([ord(c) for c in n], dtype=np.uint16)[:, None]).ref
    return refs


@pytest.mark.parametrize("make,reason", [
    (lambda: _v5_with_dims((100_000, 100_000)), "declares more data"),
    (lambda: _v5_with_dims((-1, 3)), "negative array dimension"),
    (lambda: _v5_bomb(8 * 2**20), "inflate beyond"),
    (lambda: _matlab_v5(NAMES, RESP.T, compress=False, s={"field": np.ones(2)}), "class 2"),  # a struct variable
    (lambda: _matlab_v5(NAMES, np.array([[1.0, np.nan, 3.0]])), "holds nan"),
    (lambda: _matlab_v5(NAMES, np.array([[1.0, np.inf, 3.0]])), "holds inf"),
    (lambda: _matlab_v5(NAMES, np.array([[1.0, 1e300, 3.0]])), "magnitude"),
    (lambda: _matlab_v5(NAMES, np.array([["a", "b", "c"]])), "numeric"),
    (lambda: scipy.io.savemat(b := io.BytesIO(), {"stimulusID": np.array(NAMES), "tEvokedResp": RESP.T}) or
     b.getvalue(), "cell vector of char"),                                                 # a char matrix
    (lambda: scipy.io.savemat(b := io.BytesIO(), {"tEvokedResp": RESP.T}) or b.getvalue(), "no variable stimulusID"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=np.arange(3.0)),
                            f.create_dataset("tEvokedResp", data=RESP))), "object references"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, NAMES)),
                            f.create_dataset("tEvokedResp", shape=(10**6, 10**4), dtype="f8", chunks=(10, 10)))),
     "declares 10000000000 values"),                                                      # huge, stored sparse
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, NAMES)),
                            f.create_dataset("tEvokedResp", data=np.array([b"x"] * 3)))), "numeric matrix"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, ["x" * 5000])),
                            f.create_dataset("tEvokedResp", data=[[1.0]]))), "at most 1024 characters"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, NAMES)),
                            f.__setitem__("tEvokedResp", h5py.ExternalLink("/etc/passwd", "x")))), "ExternalLink"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, NAMES)),
                            f.create_dataset("tEvokedResp", shape=(3, 1), dtype="f8",
                                             external=[("/etc/hostname", 0, 24)]))), "outside the file"),
    (lambda: _h5(lambda f: (f.create_dataset("stimulusID", data=_refs(f, NAMES)),
                            f.create_group("tEvokedResp"))), "not an array"),
    (lambda: b"MATLAB 5.0 MAT-file" + b"\x00" * 20, "shorter than a MAT-file header"),
    (lambda: b"\x00" * 4096, "not a MATLAB"),
    (lambda: _matlab_v73(NAMES, RESP.T)[:3000], "unreadable"),
    (lambda: _matlab_v5(NAMES, RESP.T, compress=False)[:400], "half-written"),
])
def test_hostile_mat_files_are_refused(make, reason):
    with pytest.raises(ProtocolError, match=reason):
        read_xdream_mat(make(), Limits(max_bytes=4 * 2**20))


def test_oversized_file_is_refused_before_reading(tmp_path):
    p = tmp_path / "block000.mat"
    p.write_bytes(_matlab_v5(NAMES, RESP.T) + b"\x00" * 5000)
    with pytest.raises(ProtocolError, match="larger than the limit of 1000 bytes"):
        read_xdream_mat(p, Limits(max_bytes=1000))


def test_a_rejected_answer_is_moved_aside_and_the_images_shown_again(tmp_path):
    """NaN in the first answer: that file goes to rejected/, the same images come back as the next block."""
    b = _block(repeats=1)

    def rig():
        for xb, value in ((0, np.nan), (1, 4.0)):
            while len(files := sorted(p.name for p in tmp_path.glob(f"block{xb:03d}_*.bmp"))) < 3:
                time.sleep(0.01)
            write_xdream_mat(tmp_path / f"block{xb:03d}.mat", files, np.full((3, 1), value), "5")

    th = threading.Thread(target=rig)
    th.start()
    cl = XDreamClient(tmp_path, timeout=5, retries=2, poll=0.01)
    reply = cl.present(b)
    th.join()
    assert (reply.responses == 4.0).all() and b.attempt == 1
    assert [p.name.split(".")[0] for p in (tmp_path / "rejected").iterdir()] == ["block000"]
    assert "holds nan" in cl.ignored[0]["reason"] and cl.ignored[0]["file"] == "block000.mat"


def test_dropped_trials_are_shown_again_in_the_next_block(tmp_path):
    """The rig records only 2 of 3 images in block000 (and one image twice, shows=1): the missing image
    alone is block001; the extra presentation is not used and is logged."""
    b = _block(n=3, repeats=1)
    shown: list[list[str]] = []

    def rig():
        for xb in (0, 1):
            want = 3 if xb == 0 else 1
            while len(files := sorted(p.name for p in tmp_path.glob(f"block{xb:03d}_*.bmp"))) < want:
                time.sleep(0.01)
            shown.append(files)
            names = [files[0], files[1], files[0]] if xb == 0 else files
            values = np.arange(len(names), dtype=float)[:, None] + 10 * xb
            write_xdream_mat(tmp_path / f"block{xb:03d}.mat", names, values, "7.3")

    th = threading.Thread(target=rig)
    th.start()
    cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01)
    reply = cl.present(b)
    th.join()
    assert len(shown[1]) == 1 and shown[1][0].split("_", 2)[2] == shown[0][2].split("_", 2)[2]
    assert sorted(reply.image_ids.tolist()) == sorted(b.image_ids.tolist())
    assert sorted(reply.responses[:, 0].tolist()) == [0.0, 1.0, 10.0]
    assert "beyond the 1 per image needed" in cl.ignored[0]["reason"] and b.attempt == 0


@pytest.mark.parametrize("shows", [1, 2])
def test_rig_showing_each_file_several_times(tmp_path, shows):
    """shows=2: the simulated rig shows each BMP twice per XDream block, so repeats=2 is one XDream block."""
    gen = generator()
    neu = neurons(gen)
    b = _block(n=4, repeats=2, c=1)
    b.images = np.ascontiguousarray(np.repeat(np.repeat(b.images[:, :8, :8], 2, axis=1), 2, axis=2))  # 16x16 grey
    with xdream_rig(neu, tmp_path, version="5", shows=shows, settle=0.02) as sim:
        cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, shows=shows)
        reply = cl.present(b)
    assert sim.n_requests == 2 // shows == cl.next_block
    assert np.bincount(reply.image_ids - 200_000).tolist() == [2, 2, 2, 2]


def _v5_offsets(data: bytes) -> dict[str, int]:
    """Offsets in an uncompressed v5 file of: the stimulusID cell's class byte, the first char array's
    value tag, the tEvokedResp values' tag (the layout scipy.io.savemat writes)."""
    cell = data.index(b"stimulusID") - 40                       # the cell's array-flags tag (8 bytes each)
    first_char = data.index(b"block")                           # the first name's values ...
    resp = data.index(b"tEvokedResp") + 16                      # name data padded to 16 bytes
    return {"cell_class": cell + 8, "char_tag": first_char - 8, "resp_tag": resp}


@pytest.mark.parametrize("edit, msg", [
    # found by the fuzz test: scipy's v5 parser trusts a value element's data type and crashed the whole
    # process (segmentation fault) on these, so they are refused before it runs
    (lambda d, o: d.__setitem__(o["cell_class"], 11), "a uint16 array holds values of data type 14"),
    (lambda d, o: struct.pack_into("<I", d, o["char_tag"], 62224), "a char array holds values of data type 62224"),
    (lambda d, o: struct.pack_into("<I", d, o["resp_tag"], 14), "a double array holds values of data type 14"),
    (lambda d, o: struct.pack_into("<I", d, o["resp_tag"] + 4, 40), "array holds 40 bytes of data type 9"),
])
def test_v5_values_of_the_wrong_type_or_size_are_refused(edit, msg):
    data = bytearray(_matlab_v5(NAMES, RESP.T, compress=False))
    edit(data, _v5_offsets(bytes(data)))
    with pytest.raises(ProtocolError, match=msg):
        read_xdream_mat(bytes(data))


# -- fuzzing -----------------------------------------------------------------------------------------
_SEEDS = [_matlab_v73(NAMES, RESP.T), _matlab_v5(NAMES, RESP.T), _matlab_v5(NAMES, RESP.T, compress=False)]


@settings(max_examples=int(os.environ.get("MANGO_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(range(len(_SEEDS))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                      max_size=8), st.integers(0, 10**6) | st.none())
def test_fuzzed_mat_files_raise_only_protocol_errors(seed, flips, cut):
    data = bytearray(_SEEDS[seed])
    for pos, val in flips:
        data[pos % len(data)] = val
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        names, resp = read_xdream_mat(bytes(data), Limits(max_bytes=2**20))
    except ProtocolError:
        return
    assert len(names) == resp.shape[0] >= 1 and np.isfinite(resp).all()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_protocol_errors(data):
    with pytest.raises(ProtocolError):
        read_xdream_mat(b"MATLAB 5.0 MAT-file".ljust(124, b" ") + b"\x00\x01IM" + data
                        if len(data) % 2 else data)


def test_stimulus_names():
    assert stimulus_name(7, 3, "gen002_200001") == "block007_03_gen002_200001.bmp"
    assert stimulus_name(1234, 123, "x") == "block1234_123_x.bmp"
    assert STIMULUS_NAME.match("block1234_123_x.bmp").groups() == ("1234", "123", "x")
    assert Path(stimulus_name(0, 0, "gen000_000000")).suffix == ".bmp"


def _answer(folder: Path, plan):
    """A scripted rig thread: for each ``(xblock, value, channels)`` of ``plan`` it waits for that XDream
    block's 3 BMPs and answers every file once with ``value``."""
    def rig():
        for xb, value, ch in plan:
            while len(files := sorted(p.name for p in folder.glob(f"block{xb:03d}_*.bmp"))) < 3:
                time.sleep(0.01)
            write_xdream_mat(folder / f"block{xb:03d}.mat", files, np.full((3, ch), value), "5")
            while any(folder.glob(f"block{xb:03d}_*.bmp")):
                time.sleep(0.01)
    th = threading.Thread(target=rig)
    th.start()
    return th


def test_a_block_stopped_part_way_keeps_what_the_rig_recorded(tmp_path):
    """repeats=2 is two XDream blocks: the first answered, the second NaN past the retries. The rerun (a new
    client of the same run, as after `mango rig-run` stopped) showed the whole block again, two more XDream
    blocks of the animal's time; now it reads block000.mat back and shows the images once more. Another run,
    even with the same seed and so the same images, takes nothing from it; nor does a client without a run id."""
    b = _block(repeats=2)
    th = _answer(tmp_path, [(0, 5.0, 1), (1, np.nan, 1)])
    with pytest.raises(RigError, match="no valid block001.mat"):
        XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, run="run-a").present(b)
    th.join()
    th = _answer(tmp_path, [(2, 7.0, 1)])
    cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, run="run-a")
    reply = cl.present(_block(repeats=2))
    th.join()
    assert cl.recovered == 3 and cl.next_block == 3                    # one new XDream block, not two
    assert sorted(reply.responses[:, 0].tolist()) == [5.0] * 3 + [7.0] * 3
    for run in ("run-b", None):                                         # the same images, another run
        th = _answer(tmp_path, [(cl.next_block, 1.0, 1), (cl.next_block + 1, 2.0, 1)])
        cl = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, run=run)
        reply = cl.present(_block(repeats=2))
        th.join()
        assert cl.recovered == 0 and sorted(reply.responses[:, 0].tolist()) == [1.0] * 3 + [2.0] * 3


def test_a_block_number_that_timed_out_is_not_used_again(tmp_path):
    """A block whose .mat never came left no file, so the next client took its number again; the ledger then
    named it twice, and a later recovery counted its one file twice."""
    with pytest.raises(RigError, match="no block000.mat"):
        XDreamClient(tmp_path, timeout=0.2, retries=0, poll=0.01, run="r").present(_block(repeats=2))
    assert XDreamClient(tmp_path, run="r").first_free_block() == 1
    th = _answer(tmp_path, [(1, 5.0, 1), (2, 6.0, 1)])
    reply = XDreamClient(tmp_path, timeout=5, retries=0, poll=0.01, run="r").present(_block(repeats=2))
    th.join()
    assert sorted(reply.responses[:, 0].tolist()) == [5.0] * 3 + [6.0] * 3


def test_one_file_with_another_channel_count_is_refused_not_the_good_ones_after_it(tmp_path):
    """The run's answers so far had 1 channel; the first file of a block came with 2. It was taken as the
    block's reference, and the correct 1-channel files after it were rejected until the run stopped."""
    th = _answer(tmp_path, [(0, 1.0, 2), (1, 3.0, 1), (2, 4.0, 1)])
    cl = XDreamClient(tmp_path, timeout=5, retries=1, poll=0.01)
    cl.expected_channels = 1                    # as the closed loop sets it from the recorded answers
    reply = cl.present(_block(repeats=2))
    th.join()
    assert reply.responses.shape == (6, 1) and sorted(reply.responses[:, 0].tolist()) == [3.0] * 3 + [4.0] * 3
    assert [r["file"] for r in cl.ignored] == ["block000.mat"] and "earlier answers had 1" in cl.ignored[0]["reason"]


def test_rig_run_takes_the_xdream_shows_and_response_folder(tmp_path):
    """`shows` and `response_folder` were documented on the client but not on `mango rig-run`: a rig that shows
    each BMP twice lost the presentations beyond the first (logged as 'not used')."""
    from mango.errors import ConfigError
    from mango.rig import make_client
    from mango.rig.run import add_arguments
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--protocol", "xdream", "--folder", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                         "--shows", "2", "--response-folder", str(tmp_path / "scores")])
    cl = make_client(args.protocol, folder=args.folder, response_folder=args.response_folder, shows=args.shows)
    assert cl.shows == 2 and cl.response_folder == tmp_path / "scores"
    with pytest.raises(ConfigError, match="for the xdream protocol, not 'zmq'"):
        make_client("zmq", shows=2)
    from mango.cli import main

    out = tmp_path / "never"        # refused before the run folder (and its run id) is made
    assert main(["rig-run", "--protocol", "zmq", "--shows", "2", "--out", str(out)]) == 2
    assert not out.exists()


def test_a_char_matrix_of_names_and_a_nan_are_named_in_the_lab_s_terms():
    """stimulusID saved as a char matrix was refused as "got <U29 (20,)", and a NaN in block002.mat said
    "response of block 1" (MANGO's block) beside the XDream file's own number."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"stimulusID": np.array(NAMES[:2]), "tEvokedResp": np.ones((1, 2))})
    with pytest.raises(ProtocolError, match=r"got a char matrix of 2 rows .*not a cell array.*cellstr"):
        read_xdream_mat(buf.getvalue())
    with pytest.raises(ProtocolError, match=r"response of MANGO block 1 holds nan at presentation 1"):
        read_xdream_mat(_matlab_v5(NAMES, np.array([[1.0, np.nan, 2.0]])), block=1)
