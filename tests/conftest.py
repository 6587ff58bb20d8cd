"""Shared fixtures: the paper's CIFAR-10 checkpoints (through MANGO_PAPER_WEIGHTS)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Tests of Ctrl-C (a run's SIGINT handler, a grid stopped by SIGINT to its process group) need SIGINT
    delivered. A shell starts a background job (``bash .ci/run &`` in a script) with SIGINT ignored, and
    the processes the tests start inherit that: give the session Python's own handler back."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def paper_weights_dir() -> Path:
    """The paper checkpoints' folder, by the package's one rule (:func:`mango.data.paper_weights_dir`)."""
    from mango.data import paper_weights_dir as lookup

    return lookup()


@pytest.fixture(scope="session")
def paper_weights() -> Path:
    """Folder with vqvae_cifar10.pt and snn_cifar10.pt; skips (with the reason) when absent."""
    d = paper_weights_dir()
    if not (d / "vqvae_cifar10.pt").is_file() or not (d / "snn_cifar10.pt").is_file():
        pytest.skip(f"paper checkpoints not found in {d} (set MANGO_PAPER_WEIGHTS to their folder)")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test to the machine's 2 cores and deterministic."""
    torch.set_num_threads(2)
    yield
