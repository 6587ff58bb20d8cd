"""The minimal clients in mango/rig/PROTOCOL.md run as written against the rig simulator, so the
document a lab implements from cannot drift from the code (issue 14, item 6)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _rig_helpers import free_port, generator, neurons, sim_thread

DOC = Path(__file__).resolve().parents[1] / "mango" / "rig" / "PROTOCOL.md"


def _client(kind: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith(f"# minimal-client: {kind}\n")]
    assert len(found) == 1, f"PROTOCOL.md has {len(found)} 'minimal-client: {kind}' blocks"
    return found[0]


def _run(code: str, env: dict[str, str]) -> str:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("token", [None, "lab-secret"])
def test_zmq_minimal_client_from_the_doc(token):
    addr = f"tcp://127.0.0.1:{free_port()}"
    with sim_thread(neurons(generator()), "zmq", addr, token=token) as sim:
        out = _run(_client("zmq"), {"RIG_ADDRESS": addr, **({"MANGO_RIG_TOKEN": token} if token else {})})
    assert sim.n_requests == 1
    assert [ln.split(":")[0] for ln in out.splitlines()] == ["image 10", "image 11", "image 12"]
    assert all(ln.endswith("over 2") for ln in out.splitlines())


def test_filedrop_minimal_client_from_the_doc(tmp_path):
    with sim_thread(neurons(generator()), "filedrop", str(tmp_path)) as sim:
        out = _run(_client("filedrop"), {"RIG_FOLDER": str(tmp_path)})
    assert sim.n_requests == 1
    assert [ln.split(":")[0] for ln in out.splitlines()] == ["image 10", "image 11", "image 12"]


def test_mac_accepts_compact_and_python_spacing():
    import hashlib
    import hmac
    import json

    import numpy as np

    from mango.rig.protocol import Reply, decode_reply

    resp = np.array([[1.0], [2.0]])
    for sep in ((",", ":"), (", ", ": ")):
        head = {"protocol": "mango-rig", "version": 1, "type": "response", "block": 1, "image_ids": [5, 6],
                "shape": [2, 1], "dtype": "float64"}
        body = json.dumps(head, sort_keys=True, separators=sep).encode()
        h = hmac.new(b"t", body, hashlib.sha256)
        h.update((16).to_bytes(8, "little"))
        h.update(resp.astype("<f8").tobytes())
        head["mac"] = h.hexdigest()
        got = decode_reply([json.dumps(head).encode(), resp.astype("<f8").tobytes()], token="t")
        assert isinstance(got, Reply) and got.responses.tolist() == [[1.0], [2.0]]


def test_unpadded_response_name_is_used_and_timeout_names_the_file(tmp_path):
    import numpy as np

    from mango.rig.filedrop import FileDropClient, write_response
    from mango.rig.protocol import Block, Reply, RigError

    blk = Block(4, np.array([40, 41]), np.zeros((2, 4, 4, 1), np.uint8), 1, np.array([0, 1]))
    cl = FileDropClient(tmp_path, timeout=0.3, retries=0)
    with pytest.raises(RigError, match="expected one of responses/block_000004.npz"):
        cl.present(blk)
    write_response(tmp_path / "responses" / "block_4.csv", Reply(4, np.array([40, 41]), np.ones((2, 1))))
    assert FileDropClient(tmp_path, timeout=5.0, retries=0).present(blk).responses.shape == (2, 1)
