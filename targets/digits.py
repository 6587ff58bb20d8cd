"""MANGO's embedded default targets, trained on scikit-learn digits.

Image format (MANGO's default): ``float32 [k, 1, 16, 16]`` in ``[0, 1]``, as made by
:func:`mango.data.digits`.

* ``snn-digits``: a spiking CNN (snnTorch ``Leaky``, beta 0.9, threshold 1, reset by
  subtraction), static input for ``T = 16`` steps::

      conv0 1->16 k3 p1 -> maxpool 2 (16->8) -> spiking0      [16, 8, 8]
      conv1 16->32 k3 p1 -> maxpool 2 (8->4) -> spiking1      [32, 4, 4]
      flatten (512) -> linear1 512->64       -> spiking2      [64]
      linear2 64->10                         -> spiking_out   [10] class read-out

* ``cnn-digits``: a small ReLU CNN::

      conv1 1->16 k3 p1, relu1, pool1 (16->8), conv2 16->32 k3 p1, relu2, pool2 (8->4),
      flatten, fc1 512->64, relu3, fc2 64->10 (class logits)

Weights live in ``targets/weights/`` (see its README for accuracy and recipe);
retrain with ``python -m mango.targets.train_snn`` / ``train_cnn``.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mango.errors import ConfigError

from .spiking import SpikingSequential, SpikingTarget
from .torch_unit import UnitTarget

__all__ = ["WEIGHTS_DIR", "SNN_T", "INPUT_SHAPE", "build_digits_snn", "build_digits_cnn", "load_weights",
           "snn_digits", "cnn_digits"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SNN_FILE = "snn_digits.pt"
CNN_FILE = "cnn_digits.pt"
SNN_T = 16
INPUT_SHAPE = (1, 16, 16)


def build_digits_snn(beta: float = 0.9, threshold: float = 1.0) -> SpikingSequential:
    """The digits SNN architecture (untrained)."""
    import snntorch as snn

    def lk() -> nn.Module:
        return snn.Leaky(beta=beta, threshold=threshold)

    return SpikingSequential(OrderedDict([
        ("conv0", nn.Conv2d(1, 16, 3, padding=1)),
        ("pool0", nn.MaxPool2d(2)),
        ("spiking0", lk()),
        ("conv1", nn.Conv2d(16, 32, 3, padding=1)),
        ("pool1", nn.MaxPool2d(2)),
        ("spiking1", lk()),
        ("flatten", nn.Flatten()),
        ("linear1", nn.Linear(512, 64)),
        ("spiking2", lk()),
        ("linear2", nn.Linear(64, 10)),
        ("spiking_out", lk()),
    ]))


def build_digits_cnn() -> nn.Sequential:
    """The digits CNN architecture (untrained)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(512, 64)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


def load_weights(model: nn.Module, path: str | os.PathLike, recipe: str) -> nn.Module:
    """Load a state dict (``weights_only=True``) into ``model``; errors name the file and the recipe."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file {str(p)!r} not found; train it with `python -m {recipe}`")
    try:
        sd: Any = torch.load(p, map_location="cpu", weights_only=True)
        model.load_state_dict(sd, strict=True)
    except Exception as e:
        raise ConfigError(f"cannot load weights {str(p)!r}: {type(e).__name__}: {e}") from e
    return model.eval()


def snn_digits(layer: str = "spiking_out", unit: int | list[int] = 0, position: list[int] | None = None,
               T: int = SNN_T, readout: str = "graded", tie_break: float = 0.0, encoding: str = "static",
               seed: int | None = 0, fast: bool = True, backend: str = "torch", weights: str | None = None,
               device: str = "cpu") -> SpikingTarget:
    """Embedded spiking CNN on digits (default: firing rate of class neuron 0 over T=16 steps).

    Takes ``[k, 1, 16, 16]`` in [0, 1]. Spiking layers: spiking0 [16,8,8], spiking1
    [32,4,4], spiking2 [64], spiking_out [10].
    """
    net = load_weights(build_digits_snn(), weights or WEIGHTS_DIR / SNN_FILE, "mango.targets.train_snn")
    target = SpikingTarget(net.to(device), layer=layer, unit=unit, position=position, T=T, readout=readout,
                           tie_break=tie_break, encoding=encoding, seed=seed, fast=fast, backend=backend,
                           input_shape=INPUT_SHAPE)
    target.net.num_steps = target.T     # the steps it runs with: mango.maximize(target.net, ...) takes them too
    return target


def cnn_digits(layer: str | None = None, unit: int | list[int] = 0, position: list[int] | None = None,
               output: str = "raw", weights: str | None = None, device: str = "cpu") -> UnitTarget:
    """Embedded ReLU CNN on digits (default: class-0 logit; ``output="softmax"`` for its probability).

    Takes ``[k, 1, 16, 16]`` in [0, 1]; layers: conv1, relu1, pool1, conv2, relu2, pool2,
    flatten, fc1, relu3, fc2, output.
    """
    net = load_weights(build_digits_cnn(), weights or WEIGHTS_DIR / CNN_FILE, "mango.targets.train_cnn")
    return UnitTarget(net.to(device), layer=layer, unit=unit, position=position, output=output,
                      input_shape=INPUT_SHAPE)
