"""Simulated neurons for the rig simulator: model units with Poisson spike counts.

For each channel ``c`` (a model unit, any registered target or plain function of
images ``float [k, C, H, W]`` in [0, 1] -> ``[k]``):

    a      = unit activation of the image
    u      = (a - lo_c) / (hi_c - lo_c)            min-max over a calibration set
    rate   = peak_rate * max(u, 0)                 spikes/s (peak_rate at the calibration max;
                                                   better-than-random images fire faster)
    count ~ Poisson(rate * presentation_time)      (seeded)

``lo_c, hi_c`` are the min and max of the unit over ``calibration`` images
(by default random images of a registered generator, else uniform noise).
:meth:`PoissonNeurons.expected` gives the noiseless mean count (the benchmark's
ground truth).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .. import registry
from ..errors import ConfigError
from ..imaging import display_uint8
from .protocol import Reply

__all__ = ["PoissonNeurons", "LocalRig", "uint8_to_float", "build_neurons", "wrong_block_reply"]

log = logging.getLogger(__name__)


def uint8_to_float(images: np.ndarray, channels: int | None = None) -> torch.Tensor:
    """``uint8 [n, H, W, C]`` -> ``float32 [n, C', H, W]`` in [0, 1]; C'=channels (grey<->RGB)."""
    x = torch.as_tensor(np.asarray(images, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0
    if channels is not None and x.shape[1] != channels:
        if channels == 1:
            x = x.mean(dim=1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        else:
            raise ConfigError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")
    return x


class PoissonNeurons:
    """``channels`` model units with Poisson spike counts (see module doc).

    Args:
        units: callables ``float [k, C, H, W] -> [k]`` (or ``[k, 1]``), one per channel.
        calibration: ``uint8 [m, H, W, C]`` images for the min-max normalisation.
        peak_rate: spikes/s at the calibration maximum (> 0).
        presentation_time: seconds each image is shown (> 0).
        in_channels: colour channels the units take (1 or 3).
        seed: seeds the Poisson noise.
    """

    def __init__(self, units: Sequence[Callable[[torch.Tensor], Any]], calibration: np.ndarray, *,
                 peak_rate: float = 50.0, presentation_time: float = 0.2, in_channels: int = 1,
                 seed: int = 0) -> None:
        if not units:
            raise ConfigError("simulated rig needs at least one unit")
        if not float(peak_rate) > 0 or not float(presentation_time) > 0:
            raise ConfigError(f"peak_rate and presentation_time must be > 0, got {peak_rate!r}, {presentation_time!r}")
        self.units = list(units)
        self.peak_rate, self.presentation_time = float(peak_rate), float(presentation_time)
        self.in_channels = int(in_channels)
        self.rng = np.random.default_rng(seed)
        a = self.activations(calibration)
        self.lo, self.hi = a.min(axis=0), a.max(axis=0)
        self.hi = np.where(self.hi > self.lo, self.hi, self.lo + 1.0)
        log.info("rig model: %d channels calibrated on %d images (lo %s, hi %s)", len(self.units),
                 len(calibration), self.lo, self.hi)

    @property
    def channels(self) -> int:
        return len(self.units)

    def activations(self, images: np.ndarray) -> np.ndarray:
        """Raw unit activations ``float64 [n, channels]`` of ``uint8 [n, H, W, C]`` images."""
        x = uint8_to_float(images, self.in_channels)
        cols = []
        with torch.no_grad():
            for u in self.units:
                a = torch.as_tensor(u(x)).detach().double().cpu().reshape(len(x), -1)
                cols.append(a[:, 0].numpy())
        return np.stack(cols, axis=1)

    def expected(self, images: np.ndarray) -> np.ndarray:
        """Noiseless mean spike counts ``float64 [n, channels]``."""
        u = (self.activations(images) - self.lo) / (self.hi - self.lo)
        return self.peak_rate * np.maximum(u, 0.0) * self.presentation_time

    def respond(self, images: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Poisson counts ``float64 [len(order), channels]`` for presentations ``images[order]``."""
        lam = self.expected(images)[np.asarray(order, dtype=np.int64)]
        return self.rng.poisson(lam).astype(np.float64)


def build_neurons(target: str = "cnn-digits", units: Sequence[int] = (0,), target_params: dict | None = None,
                  calib_generator: str | None = "vqvae-digits", calib_images: int = 256,
                  image_shape: tuple[int, int, int] = (16, 16, 1), peak_rate: float = 50.0,
                  presentation_time: float = 0.2, seed: int = 0) -> PoissonNeurons:
    """Poisson neurons from a registered target (one channel per unit), calibrated on random images.

    Args:
        target: registered target name (``mango targets``), built once per unit with ``unit=u``.
        units: unit indices, one channel each.
        calib_generator: registered generator whose random images calibrate the
            rates; ``None``: uniform noise images of ``image_shape`` (H, W, C).
    """
    params = dict(target_params or {})
    models = [registry.create("target", target, {**params, "unit": int(u)}) for u in units]
    rng = np.random.default_rng(seed + 7919)
    if calib_generator:
        gen = registry.create("generator", calib_generator)
        I = gen.space.sample(rng, calib_images)
        with torch.no_grad():
            calib = display_uint8(gen(gen.space.decode(I)), gen)
    else:
        calib = rng.integers(0, 256, size=(calib_images, *image_shape), dtype=np.uint8)
    in_ch = int(calib.shape[-1])
    return PoissonNeurons(models, calib, peak_rate=peak_rate, presentation_time=presentation_time,
                          in_channels=in_ch, seed=seed)


class LocalRig:
    """An in-process rig (no transport): same ``present(block) -> Reply`` as the clients.

    For benchmarks and unit tests of the loop; ``latency`` seconds per presentation.
    """

    def __init__(self, neurons: PoissonNeurons, latency: float = 0.0, seed: int = 0) -> None:
        self.neurons = neurons
        self.latency = float(latency)
        self.rng = np.random.default_rng(seed)

    def present(self, block: Any) -> Any:
        order = block.order if block.order is not None else \
            self.rng.permutation(np.repeat(np.arange(len(block.image_ids)), block.repeats))
        if self.latency:
            time.sleep(self.latency * len(order))
        resp = self.neurons.respond(block.images, order)
        return Reply(block.block, np.asarray(block.image_ids)[order], resp)

    def close(self) -> None:
        pass


def wrong_block_reply(reply: Reply) -> Reply:
    """Fault injection: a copy of ``reply`` that names another block (and that block's image ids)."""
    shift = 100_000
    return Reply(reply.block + shift, np.asarray(reply.image_ids) + shift * 100_000, reply.responses)
