"""Issue 13 item 1: a model file whose pickle runs code must not run it unless the user opts in.

The payload is real: unpickling ``evil.pt`` calls ``os.system`` (through ``__reduce__``) to create
a marker file. On the old code (``torch.load(weights_only=False)`` on a user path) the marker
appeared for ``mango run --target torch-unit --target-param model=evil.pt`` and for ``mango layers``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mango.errors import ConfigError


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(_Payload(str(marker)), str(path))
    return path, marker


@pytest.mark.parametrize("factory", ["torch_unit", "snn_unit", "model_target"])
def test_python_loaders_refuse_a_code_running_pickle(tmp_path, factory):
    from mango.targets.model_target import model_target
    from mango.targets.snn_net import snn_unit
    from mango.targets.torch_unit import torch_unit

    path, marker = _evil(tmp_path)
    fn = {"torch_unit": lambda: torch_unit(str(path)), "snn_unit": lambda: snn_unit(str(path)),
          "model_target": lambda: model_target(str(path), "output:0")}[factory]
    with pytest.raises(ConfigError, match="trust_pickle") as e:
        fn()
    assert "evil.pt" in str(e.value) and "factory" in str(e.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("argv", [
    ["run", "--generator", "vqvae-digits", "--target", "torch-unit", "--target-param", "model={path}",
     "--budget", "10", "-q"],
    ["layers", "torch-unit", "--target-param", "model={path}", "--target-param", "input_shape=[1,16,16]"],
])
def test_command_line_refuses_a_code_running_pickle(tmp_path, argv):
    path, marker = _evil(tmp_path)
    p = subprocess.run([sys.executable, "-m", "mango.cli", *[a.format(path=path) for a in argv]],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "trust_pickle" in p.stderr and "Traceback" not in p.stderr
    assert not marker.exists(), "the payload ran"


def test_the_opt_in_is_explicit_and_does_what_it_says(tmp_path):
    """With trust_pickle=True the file is unpickled (so the payload runs: that is what the opt-in means)."""
    from mango.targets.torch_unit import torch_unit

    path, marker = _evil(tmp_path)
    with pytest.raises(ConfigError):          # the payload returns an int, not a module
        torch_unit(str(path), trust_pickle=True)
    assert marker.exists()
