"""Spiking networks (snnTorch) as MANGO targets.

A spiking network here is a *step module*: ``net(x_t)`` runs one time step and
its snnTorch neurons keep their membrane in ``neuron.mem`` between calls (snnTorch
``Leaky`` does this when no ``mem`` is passed). :class:`SpikingSequential` is an
``nn.Sequential`` that does this for layers returning ``(spk, mem)`` tuples.

The activation of a unit over ``T`` steps is its spike count (``readout="count"``,
in ``[0, T]``) or firing rate (``"rate"``, count / T in ``[0, 1]``); a unit is one
neuron (``unit=c`` of a ``[N]`` layer, or ``unit=c, position=(y, x)``) or a
channel's mean over space (``unit=c`` of a ``[C, H, W]`` layer). An optional
tie-break adds ``tie_break * mean_t(membrane)`` of the same unit, so an optimizer
still sees a slope where rates are equal; keep ``tie_break * max|mem| < 1`` (count)
or ``< 1/T`` (rate) if the order of different rates must not change.

Neuron states are reset before every batch (every stimulus starts from zero).

Input coding:

* ``"static"`` (the paper's): the image is presented unchanged at each step;
* ``"poisson"``: at each step every pixel spikes with probability equal to its
  value (images must be in [0, 1]). With a ``seed``, each image's draws come from
  its own generator seeded from ``(seed, a hash of the image's bytes)``, so an
  image's spike trains, and hence its value, depend only on the seed and the image
  itself: not on the other images in the batch, its position there or the batch
  size. The target is then deterministic per image (``noisy = False``) and the
  engine may cache its values. (The draws are made on the images' device, so a
  different device type may give different, equally valid, trains.) With
  ``seed=None`` it draws fresh noise at every call (``noisy = True``).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import torch
from torch import nn

from mango.errors import ConfigError, choices_hint

from .units import UnitSpec, find_layer, list_layers

__all__ = ["SpikingSequential", "SpikingTarget", "spiking_layer_names", "reset_states", "poisson_spikes",
           "image_seed", "reference_run"]

log = logging.getLogger(__name__)

READOUTS = ("rate", "count")
ENCODINGS = ("static", "poisson")


def _is_spiking(m: nn.Module) -> bool:
    try:
        from snntorch._neurons.neurons import SpikingNeuron
    except ImportError:  # pragma: no cover - snntorch missing
        return False
    return isinstance(m, SpikingNeuron)


class SpikingSequential(nn.Sequential):
    """``nn.Sequential`` for one time step of a feed-forward SNN.

    Layers may return ``(spk, mem)`` tuples (snnTorch neurons with
    ``init_hidden=False``); only the first element is passed on. Neurons keep their
    state in ``.mem``; call :func:`reset_states` between stimuli.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # one time step
        for m in self:
            x = m(x)
            if isinstance(x, tuple):
                x = x[0]
        return x


def spiking_layer_names(net: nn.Module) -> list[str]:
    """Dotted names of the snnTorch neuron layers of ``net``, in registration order."""
    return [n for n, m in net.named_modules() if n and _is_spiking(m)]


def reset_states(net: nn.Module) -> None:
    """Zero the state of every snnTorch neuron in ``net`` (the next step re-creates it at the input's shape)."""
    for m in net.modules():
        if _is_spiking(m):
            for name in ("mem", "syn", "spk"):
                if isinstance(getattr(m, name, None), torch.Tensor):
                    dev = getattr(m, name).device
                    setattr(m, name, torch.zeros(0, device=dev))


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A 63-bit generator seed from ``seed`` and one image's content (its shape and float32 bytes).

    Stable across processes and runs (BLAKE2b, not Python's salted ``hash``); equal
    images give equal seeds, whatever batch they come in.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(16, "little", signed=True))
    h.update(repr(tuple(image.shape)).encode())
    h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def poisson_spikes(images: torch.Tensor, T: int, seed: int | None) -> torch.Tensor:
    """Bernoulli rate coding: ``[B, ...]`` in [0, 1] -> ``[T, B, ...]`` of 0/1 (same dtype).

    Pixel ``x`` spikes at step ``t`` when ``u[t] < clamp(x, 0, 1)`` with ``u`` uniform
    in [0, 1). With a ``seed``, image ``b``'s uniforms ``[T, ...]`` come from a
    ``torch.Generator`` on the images' device seeded with :func:`image_seed`
    ``(seed, images[b])``, so they depend only on the seed and that image (not on
    the batch it is in or its position there). With ``seed=None``, one generator
    with fresh entropy draws for the whole batch.
    """
    T = int(T)
    dev = images.device
    p = images.detach().clamp(0.0, 1.0)
    gen = torch.Generator(device=dev)
    if seed is None:
        gen.seed()
        u = torch.rand((T, *images.shape), generator=gen, device=dev, dtype=images.dtype)
        return (u < p).to(images.dtype)
    if images.ndim < 1:
        raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
    host = images.detach().to("cpu", torch.float32)     # one transfer for all the hashes
    u = torch.empty((T, *images.shape), device=dev, dtype=images.dtype)
    for b in range(images.shape[0]):
        gen.manual_seed(image_seed(seed, host[b]))
        u[:, b] = torch.rand((T, *images.shape[1:]), generator=gen, device=dev, dtype=images.dtype)
    return (u < p).to(images.dtype)


def _unpack(out: object, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, tuple):
        spk = out[0]
        mem = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else getattr(module, "mem", None)
    else:
        spk, mem = out, getattr(module, "mem", None)
    return spk, mem


def reference_run(net: nn.Module, x: torch.Tensor, T: int, layers: Sequence[str],
                  record: str = "count", sequence: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor]:
    """The plain snnTorch step loop with hooks on ``layers``.

    Args:
        x: static input ``[B, ...]`` (presented at every step) or a sequence ``[T, B, ...]``.
        record: ``"count"``: per layer ``(spike count [B, *S], membrane sum over t [B, *S])``
            accumulated in place; ``"spikes"``: per layer the spikes ``[T, B, *S]``.
        sequence: ``x`` is ``[T, B, ...]`` and ``x[t]`` is fed at step ``t``.

    States are reset first; hooks are removed afterwards.
    """
    modules = dict(net.named_modules())
    acc: dict[str, list] = {n: [] for n in layers}

    def make(name: str):
        def hook(m, _inp, out):
            spk, mem = _unpack(out, m)
            a = acc[name]
            if record == "spikes":
                a.append(spk.detach().clone())
            elif not a:
                a.extend([spk.clone(), None if mem is None else mem.clone()])
            else:
                a[0] = a[0] + spk
                if mem is not None:
                    a[1] = a[1] + mem
        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in layers]
    try:
        reset_states(net)
        for t in range(int(T)):
            net(x[t] if sequence else x)
    finally:
        for h in handles:
            h.remove()
        reset_states(net)
    if record == "spikes":
        return {n: torch.stack(v) for n, v in acc.items()}
    return {n: (v[0], v[1]) for n, v in acc.items()}


class SpikingTarget:
    """A unit of a spiking network, read out over ``T`` time steps.

    Args:
        net: step module (see module docstring), e.g. :class:`SpikingSequential`.
        layer: a spiking layer's name (default: the last one, the class read-out).
        unit, position: the unit (see :class:`mango.targets.units.UnitSpec`).
        T: number of time steps (>= 1).
        readout: ``"rate"`` (in [0, 1]) or ``"count"`` (in [0, T]).
        tie_break: weight of the unit's mean membrane potential added to the readout (0: off).
        encoding: ``"static"`` or ``"poisson"`` (see module docstring).
        seed: Poisson seed; each image's draws are seeded from ``(seed, the image's bytes)``
            at every call, so its value does not depend on its batch (None: fresh noise,
            noisy target).
        fast: use :class:`mango.targets.snn_fast.FastSNN` (identical spikes) when the
            network is a feed-forward ``nn.Sequential`` of Leaky neurons and stateless
            layers and no gradient is needed; otherwise the snnTorch step loop.
        backend: fast path's neuron kernel: ``"torch"`` (default; no compile cost),
            ``"compile"`` or ``"auto"`` (fused ``torch.compile`` kernel, worth it for large
            layers such as the paper SNN's; the first compile takes from seconds to a
            minute or two and is cached on disk by inductor).
        input_shape: per-sample input shape; when given, layer and unit are checked now.

    Calling it: ``images [k, C, H, W]`` -> ``[k]`` float32. With gradients enabled
    (and ``images.requires_grad``) it runs the snnTorch loop, whose surrogate
    gradients flow back to the images (``differentiable = True``).
    """

    differentiable = True

    def __init__(self, net: nn.Module, layer: str | None = None, unit: int | Sequence[int] = 0,
                 position: Sequence[int] | None = None, T: int = 32, readout: str = "rate",
                 tie_break: float = 0.0, encoding: str = "static", seed: int | None = 0,
                 fast: bool = True, backend: str = "torch", input_shape: Sequence[int] | None = None) -> None:
        names = spiking_layer_names(net)
        if not names:
            raise ConfigError(f"{type(net).__name__} has no snnTorch spiking layers")
        self.net = net.eval()
        self.layer = names[-1] if layer in (None, "") else str(layer)
        find_layer(net, self.layer, valid=names, what="spiking layer")
        self.spec = UnitSpec.make(unit, position)
        if int(T) < 1:
            raise ConfigError(f"T (time steps) must be >= 1, got {T!r}")
        self.T = int(T)
        if readout not in READOUTS:
            raise ConfigError(f"unknown readout {readout!r}; {choices_hint(readout, READOUTS)}")
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; {choices_hint(encoding, ENCODINGS)}")
        self.readout = readout
        self.tie_break = float(tie_break)
        self.encoding = encoding
        self.seed = seed
        self.noisy = encoding == "poisson" and seed is None
        # Poisson draws cut the gradient path to the pixel values
        self.differentiable = encoding == "static"
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._fast = None
        if fast:
            from .snn_fast import FastSNN, fast_supported
            why = fast_supported(net)
            if why is None:
                self._fast = FastSNN(net, backend=backend)
            else:
                log.info("fast SNN path off for %s: %s", type(net).__name__, why)
        self._checked = False
        if input_shape is not None:
            self._check(torch.zeros((1, *[int(s) for s in input_shape]), device=self.device))

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    def describe(self) -> str:
        return (f"{type(self.net).__name__}[{self.layer}].{self.spec.describe()} {self.readout} "
                f"T={self.T} {self.encoding}")

    def layers(self, input_shape: Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """All layers of the network with per-sample output shapes (one time step), spiking ones marked
        by :func:`spiking_layer_names`; ``input_shape`` defaults to the one given at construction."""
        shape = input_shape or self.input_shape
        if shape is None:
            raise ConfigError("layers() needs the per-sample input shape, e.g. (1, 16, 16)")
        try:
            return list_layers(self.net, shape)
        finally:
            reset_states(self.net)

    def _check(self, example: torch.Tensor) -> None:
        res = reference_run(self.net, example[:1], 1, [self.layer])
        self.spec.check(tuple(res[self.layer][0].shape[1:]), self.layer)
        self._checked = True

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoding == "poisson":
            return poisson_spikes(images, self.T, self.seed)
        return images

    def spikes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spike counts ``[k, *S]`` and membrane sums ``[k, *S]`` of the whole layer over ``T``."""
        x = self._input(images)
        grad = torch.is_grad_enabled() and images.requires_grad
        if self._fast is not None and not grad:
            with torch.no_grad():
                return self._fast.run(x, self.T, self.layer, want_mem=self.tie_break != 0.0,
                                      sequence=self.encoding == "poisson")
        res = reference_run(self.net, x, self.T, [self.layer], sequence=self.encoding == "poisson")
        return res[self.layer]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images [k, C, H, W]`` -> readout of the unit ``[k]`` (float32)."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if not self._checked:
            self._check(images.detach())
        count, mem = self.spikes(images)
        y = self.spec.select(count)
        if self.readout == "rate":
            y = y / self.T
        if self.tie_break != 0.0 and mem is not None:
            y = y + self.tie_break * (self.spec.select(mem) / self.T)
        return y.float()
