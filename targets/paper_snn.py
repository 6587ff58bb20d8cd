"""The MANGO paper's spiking CNN for CIFAR-10 (snnTorch ``Leaky`` neurons).

Architecture (one time step; the image is presented unchanged at every step)::

    conv0 3->200 k5 (32->28) -> maxpool k3 s2 p1 (28->14) -> spiking0
    conv1 200->64 k5 (14->10) -> maxpool 2 (10->5)        -> spiking1
    flatten (1600) -> linear1 1600->100                    -> spiking2
    linear2 100->10 -> ReLU                                -> final_spiking (class read-out)

Note the first pool is 3/2/1, not 2x2 (a quirk of the original code). ``Leaky``
parameters (beta, threshold, graded spike factor, reset mechanism) are read from
the checkpoint; reset is by subtraction using the previous step's membrane.

Input: CIFAR-10 images normalised per channel, ``(x - MEAN) / STD`` with
``MEAN = (0.4914, 0.4822, 0.4465)``, ``STD = (0.2471, 0.2435, 0.2616)``,
``[k, 3, 32, 32]`` float32 (the paper's VQ-VAE decodes straight into this space).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mango.data import CIFAR10_MEAN, CIFAR10_STD, PAPER_WEIGHTS_ENV, paper_weights_file
from mango.errors import ConfigError

from .spiking import SpikingSequential, SpikingTarget

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "WEIGHTS_FILE", "build_paper_snn", "load_paper_snn",
           "resolve_weights", "snn_cifar10"]

WEIGHTS_FILE = "snn_cifar10.pt"


def _leaky(beta: float = 0.9) -> nn.Module:
    import snntorch as snn
    return snn.Leaky(beta=beta)


def build_paper_snn() -> SpikingSequential:
    """The paper's SNN with untrained weights (state-dict keys match ``snn_cifar10.pt``)."""
    return SpikingSequential(OrderedDict([
        ("conv0", nn.Conv2d(3, 200, 5)),
        ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ("spiking0", _leaky()),
        ("conv1", nn.Conv2d(200, 64, 5)),
        ("pool1", nn.MaxPool2d(2)),
        ("spiking1", _leaky()),
        ("flatten", nn.Flatten()),
        ("linear1", nn.Linear(1600, 100)),
        ("spiking2", _leaky()),
        ("linear2", nn.Linear(100, 10)),
        ("relu", nn.ReLU()),
        ("final_spiking", _leaky()),
    ]))


def resolve_weights(path: str | os.PathLike | None, filename: str = WEIGHTS_FILE) -> Path:
    """The checkpoint file from a file or folder path (default :func:`mango.data.paper_weights_dir`).

    Raises:
        ConfigError: the file does not exist (the message names it and how to point at it).
    """
    p = paper_weights_file(filename, path)
    if not p.is_file():
        raise ConfigError(f"paper SNN weights {str(p)!r} not found; pass weights=PATH (file or folder) "
                          f"or set {PAPER_WEIGHTS_ENV} to the folder holding {filename}")
    return p


def load_paper_snn(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SpikingSequential:
    """Build the paper's SNN and load ``snn_cifar10.pt`` (``weights_only=True``), in eval mode.

    Raises:
        ConfigError: missing, unreadable or mismatching file (the message names it).
    """
    p = resolve_weights(path)
    try:
        sd: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read paper SNN weights {str(p)!r}: {type(e).__name__}: {e}") from e
    if not isinstance(sd, dict):
        raise ConfigError(f"{str(p)!r} does not hold a state_dict (got {type(sd).__name__})")
    net = build_paper_snn()
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{str(p)!r} does not match the paper SNN architecture: {e}") from e
    return net.to(device).eval()


def snn_cifar10(weights: str | None = None, layer: str = "final_spiking", unit: int | list[int] = 3,
                position: list[int] | None = None, T: int = 128, readout: str = "graded",
                tie_break: float = 0.0, fast: bool = True, backend: str = "auto",
                device: str = "cpu") -> SpikingTarget:
    """The paper's spiking CNN on CIFAR-10 (default: firing rate of class neuron 3, "cat", T=128).

    Takes normalised CIFAR-10 images ``[k, 3, 32, 32]`` (see module docstring).
    """
    net = load_paper_snn(weights, device)
    target = SpikingTarget(net, layer=layer, unit=unit, position=position, T=T, readout=readout,
                           tie_break=tie_break, fast=fast, backend=backend, input_shape=(3, 32, 32))
    target.net.num_steps = target.T     # the steps it runs with: mango.maximize(target.net, ...) takes them too
    return target
