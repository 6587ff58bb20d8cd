"""Spiking networks (snnTorch) as MANGO targets.

A spiking network here is a *step module*: ``net(x_t)`` runs one time step and
its snnTorch neurons keep their membrane in ``neuron.mem`` between calls (snnTorch
``Leaky`` does this when no ``mem`` is passed). :class:`SpikingSequential` is an
``nn.Sequential`` that does this for layers returning ``(spk, mem)`` tuples.

A unit is one neuron (``unit=c`` of a ``[N]`` layer, or ``unit=c, position=(y, x)``)
or a channel (``unit=c`` of a ``[C, H, W]`` layer: its ``P = H * W`` positions,
averaged). Over ``T`` steps a unit emits ``N`` spikes in all (summed over its ``P``
positions; each spike has the layer's value ``g``, snnTorch's
``graded_spikes_factor``, 1 in most networks).

Readouts (what the search maximizes; ``readout=``):

* ``"graded"`` (default): the firing rate with its ties broken by what the forward
  pass shows below threshold (still gradient-free: it reads only the forward state)::

      score = g * (N + tie) / (P * T),   tie in [0, 1 - 2**-20]
      tie   = 0.4 * H_p s(max_{t >= T/2} mem_p(t)) + 0.2 * mean_p s(mean_t mem_p(t)) + 0.4 * mean_p E_p
      H_p x_p = (mean_p x_p + max_p x_p) / 2                          (x itself for one neuron)
      s(v)  = 1/2 + 1/2 * r / (1 + |r|),  r = (v - thr) / thr      (in (0, 1), 1/2 at threshold)
      E_p   = (T - t_first_p) / T if position p fired (first at step t_first_p), else 0

  The first two terms say how close each position's membrane came to threshold,
  squashed into (0, 1): its peak over the *second half* of the presentation
  (``t >= T // 2``) and its mean over all of it. The peak leaves out the onset on
  purpose: at the first steps every upstream neuron with a strong input fires at once,
  and that volley can lift a deep unit far above threshold for one step although the
  drive that follows inhibits it; a peak over all steps ranked such an image (one
  spike at step 0, none after) above any whose drive is sustained, and the search
  stalled there (the *one-early-spike trap*), while the late peak says how near the
  unit is to firing again, which is what a higher rate needs. Over a channel's
  positions the mean term is averaged (a mean climbs steadily) and the peak term ``H``
  is half mean, half max: a silent channel often can fire at a few positions only
  (where its receptive field meets what drives it, e.g. at an image border), and the
  max lets a near miss there count instead of diluting it among the other positions.
  ``E`` says how early the unit fired. (What each choice did on units of the paper SNN
  outside the search-quality benchmark: ``experiments/results/search_quality_tuning.md``.)
  One more spike anywhere in the unit raises ``N`` by 1, i.e. the plain rate by its
  smallest possible step ``g / (P * T)``; the tie term
  is always below that step, so **the score can never outrank one more spike**, and
  the plain rate is recovered exactly from the score alone (:meth:`SpikingTarget.reported`,
  ``reported_name = "rate"``), bit for bit equal to ``readout="rate"`` of the same
  image. A silent unit still gets a score that differs between images.
* ``"rate"``: the plain firing rate ``g * N / (P * T)`` in ``[0, g]``.
* ``"count"``: the plain spike count ``g * N / P`` (per position for a channel) in ``[0, g * T]``.

All readouts are float64. ``tie_break`` (deprecated) adds ``tie_break * mean_t(membrane)``
to the plain rate/count, which can outrank a spike; with ``tie_break != 0`` the readout
is the plain one plus that term, as before (a deprecation warning says so).

Recording rigs (:mod:`mango.targets.rig`) return spike counts only: no membrane is
recorded there, so their score is the (mean) count itself, with no graded term.

For gradient AM, :meth:`SpikingTarget.surrogate_forward` runs the same network with
Heaviside spikes forward and a fast-sigmoid surrogate backward
(``d spike / d v = 1 / (1 + slope * |v - thr|)^2``), so gradients flow even where
the unit never fires, and returns the differentiable plain rate.

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
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mango.devices import module_device
from mango.errors import ConfigError, choices_hint

from .units import NEEDS_INPUT_SHAPE, UnitSpec, find_layer, list_layers, probe_input_shape

__all__ = ["SpikingSequential", "SpikingTarget", "spiking_layer_names", "reset_states", "poisson_spikes",
           "image_seed", "reference_run", "graded_score", "plain_rate", "rate_from_score", "TIE_MAX",
           "fast_sigmoid_spike", "unpack_neuron", "approach_rows"]

log = logging.getLogger(__name__)

READOUTS = ("graded", "rate", "count")
#: largest tie term of the graded readout, in spikes: below one spike with room for float64 rounding
TIE_MAX = 1.0 - 2.0 ** -20
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


def unpack_neuron(out: object, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A neuron's ``(spk, mem)`` from what it returns: ``spk``, ``(spk, mem)``, or with synaptic currents
    in between, ``(spk, syn, mem)`` (Synaptic, RSynaptic, SLSTM) and ``(spk, syn_exc, syn_inh, mem)``
    (Alpha): the membrane is the last item. Without one, the neuron's ``mem`` attribute (``init_hidden``)."""
    if isinstance(out, (tuple, list)):
        spk = out[0]
        mem = out[-1] if len(out) > 1 and isinstance(out[-1], torch.Tensor) else getattr(module, "mem", None)
    else:
        spk, mem = out, getattr(module, "mem", None)
    return spk, mem


def reference_run(net: nn.Module, x: torch.Tensor, T: int, layers: Sequence[str],
                  record: str = "count", sequence: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor]:
    """The plain snnTorch step loop with hooks on ``layers``.

    Args:
        x: static input ``[B, ...]`` (presented at every step) or a sequence ``[T, B, ...]``.
        record: ``"count"``: per layer ``(spike count [B, *S], membrane sum over t [B, *S])``
            accumulated in place; ``"spikes"``: per layer the spikes ``[T, B, *S]``;
            ``"stats"``: per layer ``(spike count [B, *S], ScanStats [B, *S])`` (spike numbers,
            membrane sum, peak membrane, first-spike step; see
            :class:`mango.targets.snn_fast.ScanStats`), with a spike where the neuron's spike output is
            not 0 (what it emits: after inhibition, and whatever membrane it returns).
        sequence: ``x`` is ``[T, B, ...]`` and ``x[t]`` is fed at step ``t``.

    States are reset first; hooks are removed afterwards.
    """
    from .snn_fast import ScanStats
    if record not in ("count", "spikes", "stats"):
        raise ConfigError(f"unknown record {record!r}; {choices_hint(record, ['count', 'spikes', 'stats'])}")
    modules = dict(net.named_modules())
    acc: dict[str, list] = {n: [] for n in layers}
    steps = {n: 0 for n in layers}

    def make(name: str):
        def hook(m, _inp, out):
            spk, mem = unpack_neuron(out, m)
            a = acc[name]
            if record == "spikes":
                a.append(spk.detach().clone())
            elif record == "stats":
                if mem is None:
                    raise ConfigError(f"layer {name!r} exposes no membrane potential; the statistics need it")
                if not a:
                    a.extend([torch.zeros_like(spk), ScanStats.zeros(tuple(mem.shape), int(T), mem.dtype, mem.device)])
                a[0] = a[0] + spk
                a[1].update(steps[name], mem, spk.detach() != 0)
                steps[name] += 1
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


# ---------------------------------------------------------------------------
# readouts: plain and graded, as pure functions of the statistics
# ---------------------------------------------------------------------------

def plain_rate(n_spikes: torch.Tensor, T: int, g: float = 1.0) -> torch.Tensor:
    """Plain firing rate ``g * N / (P * T)`` from spike numbers ``[B, P]`` -> float64 ``[B]``.

    ``N`` is the spike number summed over the unit's ``P`` positions (exact integers in
    float64); one multiplication and one correctly rounded division, the same as
    :func:`rate_from_score`, so the two agree bit for bit.
    """
    P = n_spikes.shape[1]
    N = n_spikes.to(torch.float64).sum(1)
    return N * float(g) / float(P * int(T))


def approach_rows(n_spikes: torch.Tensor, late_peak: torch.Tensor, rest: tuple[int, ...],
                  thr: float) -> list[dict[str, Any]]:
    """The ``approach`` dicts (see :meth:`SpikingTarget.approach`) of one unit's statistics: spikes ``[k, P]``
    and late membrane peaks ``[k, P]`` over the unit's ``P`` positions, ``rest`` the map's shape (``()``
    for a single neuron or a channel at a given position), ``thr`` the layer's threshold."""
    lp = late_peak.detach().to(torch.float64)
    out = []
    for b in range(lp.shape[0]):
        j = int(torch.argmax(lp[b]))
        pos = [int(v) for v in np.unravel_index(j, rest)] if rest and lp.shape[1] > 1 else None
        peak = float(lp[b, j])
        out.append({"spikes": int(n_spikes[b].sum()), "late_peak": peak, "threshold": float(thr),
                    "peak_over_threshold": peak / float(thr) if float(thr) != 0.0 else None,
                    "position": pos, "map": list(rest) if pos is not None else None})
    return out


def threshold_and_spike_value(neuron: nn.Module) -> tuple[float, float]:
    """A snnTorch neuron's firing threshold and the value of one spike (``graded_spikes_factor``)."""
    def scalar(name: str) -> float:
        return float(torch.as_tensor(getattr(neuron, name, 1.0)).detach().reshape(-1)[0])
    return scalar("threshold"), scalar("graded_spikes_factor")


def _squash(v: torch.Tensor, thr: float) -> torch.Tensor:
    """Membrane values -> (0, 1), monotone, 1/2 at ``thr`` (float64; +-inf and NaN clamped)."""
    scale = abs(float(thr)) if float(thr) != 0.0 else 1.0
    r = (v.to(torch.float64) - float(thr)) / scale
    r = torch.nan_to_num(r, nan=-1e300, neginf=-1e300, posinf=1e300)
    return 0.5 + 0.5 * r / (1.0 + r.abs())


def graded_score(n_spikes: torch.Tensor, late_peak: torch.Tensor, first: torch.Tensor, T: int, thr: float,
                 g: float = 1.0, mem_sum: torch.Tensor | None = None) -> torch.Tensor:
    """The graded readout (see module docstring) from per-position statistics -> float64 ``[B]``.

    Args:
        n_spikes: spikes per position ``[B, P]`` (integer values in [0, T]).
        late_peak: max of each position's membrane over the steps ``t >= T // 2`` ``[B, P]``
            (:attr:`~mango.targets.snn_fast.ScanStats.late_peak`; any real, ``-inf`` allowed).
        first: first step with a spike ``[B, P]`` in ``[0, T)``, or ``>= T`` where none.
        mem_sum: sum over time of each position's membrane ``[B, P]`` (None: its term is left out).
        T: time steps; thr: the layer's threshold; g: the value of one spike (> 0).

    Returns:
        ``g * (N + tie) / (P * T)`` with ``N`` the total spike number and ``tie`` in
        ``[0, TIE_MAX]``: at least the plain rate, below the plain rate of ``N + 1`` spikes.
    """
    P = n_spikes.shape[1]
    T = int(T)
    N = n_spikes.to(torch.float64).sum(1)
    f = first.to(torch.float64)
    E = torch.where(f < T, (T - f) / T, torch.zeros_like(f))     # (0, 1] when it fired, else 0
    near = _squash(late_peak, thr)
    near = 0.5 * near.mean(1) + 0.5 * near.amax(1)               # exactly the value itself when P == 1
    tie = 0.4 * near + 0.4 * E.mean(1)
    if mem_sum is not None:
        tie = tie + 0.2 * _squash(mem_sum.to(torch.float64) / T, thr).mean(1)
    return (N + tie.clamp(0.0, TIE_MAX)) * float(g) / float(P * T)


def rate_from_score(score: np.ndarray, P: int, T: int, g: float = 1.0) -> np.ndarray:
    """Invert :func:`graded_score` to the plain rate, exactly: float64 ``[k]`` -> float64 ``[k]``.

    ``N = floor(score * P * T / g + 2**-22)``; float64 rounding moves ``score * P * T / g``
    by far less than ``2**-22`` (for ``N < 2**28``), and the tie term stays in
    ``[0, 1 - 2**-20]``, so this is the spike number; the rate is then computed as in
    :func:`plain_rate`.
    """
    s = np.asarray(score, dtype=np.float64)
    PT = float(int(P) * int(T))
    N = np.floor(s * PT / float(g) + 2.0 ** -22)
    return N * float(g) / PT


class _FastSigmoidSpike(torch.autograd.Function):
    """Heaviside spike forward, fast-sigmoid surrogate backward: ``1 / (1 + slope |v|)^2``."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, slope: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.slope = float(slope)
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * v.abs()) ** 2, None


def fast_sigmoid_spike(v: torch.Tensor, slope: float = 25.0) -> torch.Tensor:
    """Spike ``v > 0`` (``v = mem - thr``) with the fast-sigmoid surrogate gradient of ``slope``."""
    return _FastSigmoidSpike.apply(v, slope)


class SpikingTarget:
    """A unit of a spiking network, read out over ``T`` time steps.

    Args:
        net: step module (see module docstring), e.g. :class:`SpikingSequential`.
        layer: a spiking layer's name (default: the last one, the class read-out).
        unit, position: the unit (see :class:`mango.targets.units.UnitSpec`).
        T: number of time steps (>= 1).
        readout: ``"graded"`` (default: the firing rate with sub-threshold tie-breaks that
            never outrank a spike; ``reported`` gives the plain rate back exactly),
            ``"rate"`` (plain, in [0, g]) or ``"count"`` (plain, in [0, g*T]); see the module docstring.
        tie_break: deprecated; weight of the unit's mean membrane potential added to the plain
            readout (``"rate"``, or ``"count"`` when asked for; ``"graded"`` becomes ``"rate"``).
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

    Calling it: ``images [k, C, H, W]`` -> ``[k]`` float64 (the readout). With gradients
    enabled (and ``images.requires_grad``) it runs the snnTorch loop; the value is the
    same and its gradient is that of the plain rate through snnTorch's surrogate
    (``differentiable = True``); gradient AM uses :meth:`surrogate_forward` instead.
    """

    differentiable = True

    def __init__(self, net: nn.Module, layer: str | None = None, unit: int | Sequence[int] = 0,
                 position: Sequence[int] | None = None, T: int = 32, readout: str = "graded",
                 tie_break: float = 0.0, encoding: str = "static", seed: int | None = 0,
                 fast: bool = True, backend: str = "torch", input_shape: Sequence[int] | None = None) -> None:
        names = spiking_layer_names(net)
        if not names:
            raise ConfigError(f"{type(net).__name__} has no snnTorch spiking layers")
        self.net = net.eval()
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ConfigError(f"layer must be the name of a spiking layer (or None for the last, {names[-1]!r}), "
                              f"got {layer!r}; {choices_hint(str(layer), names)}")
        self.layer = names[-1] if layer is None else layer
        neuron = find_layer(net, self.layer, valid=names, what="spiking layer")
        self.spec = UnitSpec.make(unit, position)
        if int(T) < 1:
            raise ConfigError(f"T (time steps) must be >= 1, got {T!r}")
        self.T = int(T)
        if readout not in READOUTS:
            raise ConfigError(f"unknown readout {readout!r}; {choices_hint(readout, READOUTS)}")
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; {choices_hint(encoding, ENCODINGS)}")
        self.tie_break = float(tie_break)
        if self.tie_break != 0.0:
            if readout == "graded":
                readout = "rate"
            warnings.warn(f"tie_break={self.tie_break} is deprecated: it adds tie_break * mean membrane to the "
                          f"plain {readout} and can outrank a spike; the default readout='graded' breaks ties "
                          f"below one spike. Using readout={readout!r} + tie_break as before.",
                          DeprecationWarning, stacklevel=2)
        self.readout = readout
        self.thr, self.g = threshold_and_spike_value(neuron)
        if readout == "graded" and not self.g > 0:
            raise ConfigError(f"the graded readout needs a positive spike value; layer {self.layer!r} has "
                              f"graded_spikes_factor={self.g}; use readout='rate' or 'count'")
        self.encoding = encoding
        self.seed = seed
        self.noisy = encoding == "poisson" and seed is None
        # Poisson draws cut the gradient path to the pixel values
        self.differentiable = encoding == "static"
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._fast = None
        self._fast_plan = None            # a layer plan for surrogate_forward when fast=False
        self._P: int | None = None        # positions of the unit (1 for a neuron), known after _check
        if fast:
            from .snn_fast import FastSNN, fast_supported
            why = fast_supported(net)
            if why is None:
                self._fast = FastSNN(net, backend=backend)
            else:
                log.info("fast SNN path off for %s: %s", type(net).__name__, why)
        self._checked = False
        if input_shape is not None:
            probe_input_shape(self._check, self.input_shape, net, self.device)

    @property
    def device(self) -> torch.device:
        """Device of the net's first parameter or buffer (CPU when it has none)."""
        return module_device(self.net)

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    # -- reported value (interface: Objective.reported delegates here) ----------------
    @property
    def reported_name(self) -> str:
        """Name of the quantity :meth:`reported` returns: ``"rate"``, ``"count"`` or ``"value"`` (tie_break)."""
        if self.tie_break != 0.0:
            return "value"
        return "count" if self.readout == "count" else "rate"

    def reported(self, values: np.ndarray) -> np.ndarray:
        """Search scores ``float64 [k]`` -> what the user asked for, ``float64 [k]``.

        Graded readout: the plain firing rate, recovered exactly from the score alone
        (equal, bit for bit, to ``readout="rate"`` of the same image). Plain readouts:
        the values themselves.
        """
        v = np.asarray(values, dtype=np.float64)
        if self.readout != "graded":
            return v.copy()
        return rate_from_score(v, self.positions, self.T, self.g)

    @property
    def positions(self) -> int:
        """``P``: positions the unit averages over (1 for a neuron or a channel at a position)."""
        if self._P is None:
            if self.input_shape is None:
                raise ConfigError("the unit's size is known after the first call or with input_shape=")
            self._check(torch.zeros((1, *self.input_shape), device=self.device))
        return int(self._P)

    def describe(self) -> str:
        return (f"{type(self.net).__name__}[{self.layer}].{self.spec.describe()} {self.readout} "
                f"T={self.T} {self.encoding}")

    def layers(self, input_shape: Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """All layers of the network with per-sample output shapes (one time step), spiking ones marked
        by :func:`spiking_layer_names`; ``input_shape`` defaults to the one given at construction."""
        shape = input_shape or self.input_shape
        if shape is None:
            raise ConfigError(NEEDS_INPUT_SHAPE)
        try:
            return list_layers(self.net, shape)
        finally:
            reset_states(self.net)

    def _check(self, example: torch.Tensor) -> None:
        res = reference_run(self.net, example[:1], 1, [self.layer])
        shape = tuple(res[self.layer][0].shape[1:])
        self.spec.check(shape, self.layer)
        self._P = int(self._unit(res[self.layer][0]).shape[1])
        self._checked = True

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """A layer tensor ``[B, *S]`` -> the unit's elements ``[B, P]``."""
        return self.spec.elements(x)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoding == "poisson":
            return poisson_spikes(images, self.T, self.seed)
        return images

    def stats(self, images: torch.Tensor):
        """Spike-value sums ``[k, *S]`` and :class:`~mango.targets.snn_fast.ScanStats` ``[k, *S]``
        of the whole layer over ``T`` (fast path when possible, else the snnTorch loop; identical).

        The images are made contiguous first: a channels-last batch (the VQ-VAE decoder returns one)
        would make the step loop's convolutions pick other kernels (other rounding) than the batched path.
        """
        x = self._input(images.contiguous())
        grad = torch.is_grad_enabled() and images.requires_grad
        if self._fast is not None and not grad:
            with torch.no_grad():
                return self._fast.run_stats(x, self.T, self.layer, sequence=self.encoding == "poisson")
        res = reference_run(self.net, x, self.T, [self.layer], record="stats", sequence=self.encoding == "poisson")
        return res[self.layer]

    def layer_graded(self, images: torch.Tensor) -> torch.Tensor:
        """The graded readout of every unit of the layer at once (one run): ``images [k, C, H, W]`` ->
        float64 ``[k, U]``, ``U`` the layer's channels (each over all its positions, as a channel unit)
        or neurons. Column ``u`` equals this target's score with ``unit=u`` and the graded readout."""
        _, st = self.stats(images)
        k, U = st.n_spikes.shape[:2]
        f = lambda a: a.detach().reshape(k * U, -1)                  # noqa: E731  [k * U, positions]
        return graded_score(f(st.n_spikes), f(st.late_peak), f(st.first), self.T, self.thr, self.g,
                            mem_sum=f(st.mem_sum)).reshape(k, U)

    def approach(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """How close each image brought the unit to firing: what a report says of a unit that stayed silent.

        ``images [k, C, H, W]`` -> one dict per image, plain JSON types:

        * ``spikes``: the unit's spikes over ``T`` (summed over a channel's positions), an int >= 0;
        * ``late_peak``: the highest membrane potential over the second half of the presentation
          (``t >= T // 2``, the graded readout's peak term), at the unit's position where it is highest;
        * ``threshold``: the layer's firing threshold; ``peak_over_threshold``: ``late_peak / threshold``
          (1 at threshold; below 0 when the membrane stays below rest; None for a zero threshold);
        * ``position``: that position in the layer's map (e.g. ``[y, x]`` of a channel's ``5 x 5`` map),
          None for a single neuron or a channel at a given position; ``map``: the map's shape, or None.
        """
        with torch.no_grad():
            _, st = self.stats(images)
        rest = tuple(int(v) for v in st.late_peak.shape[2:]) if self.spec.position is None else ()
        return approach_rows(self._unit(st.n_spikes.detach()), self._unit(st.late_peak.detach()), rest, self.thr)

    def spikes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spike counts ``[k, *S]`` and membrane sums ``[k, *S]`` of the whole layer over ``T``."""
        count, st = self.stats(images)
        return count, st.mem_sum

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images [k, C, H, W]`` -> readout of the unit ``[k]`` (float64)."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if not self._checked:
            self._check(images.detach())
        count, st = self.stats(images)
        n = self._unit(st.n_spikes.detach())
        if self.readout == "graded":
            y = graded_score(n, self._unit(st.late_peak.detach()), self._unit(st.first), self.T, self.thr, self.g,
                             mem_sum=self._unit(st.mem_sum.detach()))
        else:
            y = plain_rate(n, self.T, self.g)
            if self.readout == "count":
                y = y * self.T
            if self.tie_break != 0.0:
                m = self._unit(st.mem_sum.detach()).to(torch.float64).mean(1) / self.T
                y = y + self.tie_break * m
        if count.requires_grad:     # value as above, gradient of the plain readout (straight through)
            c = self._unit(count).to(torch.float64).mean(1)
            c = c if self.readout == "count" else c / self.T
            y = y + (c - c.detach())
        return y

    # -- differentiable forward for gradient AM ------------------------------------
    def surrogate_forward(self, images: torch.Tensor, slope: float = 25.0) -> torch.Tensor:
        """Differentiable firing rate of the unit, ``images [k, C, H, W]`` -> ``[k]`` (float32, in [0, g]).

        The same Leaky recurrence (:func:`mango.targets.snn_fast.leaky_update`, reset from the
        previous membrane, not differentiated) with spikes ``Heaviside(mem - thr)`` forward and
        the fast-sigmoid surrogate ``1 / (1 + slope * |mem - thr|)^2`` backward, so gradients
        flow where the unit never fires. Rate = spike values summed over ``T`` (and averaged over
        the unit's positions) / ``T``. Feed-forward ``nn.Sequential`` networks run layer by layer
        (layers before the first spiking layer once, stateless layers batched over time, layers
        after the unit's skipped); other networks run the snnTorch step loop with every
        neuron's ``spike_grad`` set to the same surrogate for the call.

        Raises:
            ConfigError: Poisson input (no gradient path to the pixels), ``slope <= 0``.
        """
        if self.encoding != "static":
            raise ConfigError(f"surrogate_forward needs static input; encoding={self.encoding!r} has no "
                              "gradient path to the pixels")
        if not float(slope) > 0:
            raise ConfigError(f"surrogate slope must be > 0, got {slope!r}")
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if not self._checked:
            self._check(images.detach())
        from .snn_fast import FastSNN, fast_supported
        plan = self._fast
        if plan is None and fast_supported(self.net) is None:
            if self._fast_plan is None:
                self._fast_plan = FastSNN(self.net, backend="torch")
            plan = self._fast_plan
        images = images.contiguous()
        if plan is None:
            count = self._surrogate_step_loop(images, float(slope))
        else:
            count = _surrogate_layers(plan, images, self.T, self.layer, float(slope))
        return self._unit(count).mean(1) / self.T

    def _surrogate_step_loop(self, images: torch.Tensor, slope: float) -> torch.Tensor:
        from snntorch import surrogate
        fs = surrogate.fast_sigmoid(slope=slope)
        saved = []
        for m in self.net.modules():
            if hasattr(m, "spike_grad") and m is not self.net:
                saved.append((m, m.spike_grad))
                m.spike_grad = fs
        try:
            return reference_run(self.net, images, self.T, [self.layer])[self.layer][0]
        finally:
            for m, sg in saved:
                m.spike_grad = sg


def _surrogate_layers(plan, images: torch.Tensor, T: int, layer: str, slope: float) -> torch.Tensor:
    """Differentiable layer-by-layer run of a :class:`FastSNN` plan -> spike-value sums ``[k, *S]`` of ``layer``."""
    from .snn_fast import leaky_update
    k = images.shape[0]
    cur, const = plan._apply(plan.pre, images), True
    last = plan.names.index(layer)
    for i, st in enumerate(plan.stages[:last + 1]):
        n = st.neuron
        beta = n.beta.detach().clamp(0, 1).to(cur.dtype).reshape(())
        thr = n.threshold.detach().to(cur.dtype).reshape(())
        g = n.graded_spikes_factor.detach().to(cur.dtype).reshape(())
        mode = int(n.reset_mechanism_val)
        mem = torch.zeros_like(cur if const else cur[0])
        spks = []
        for t in range(T):
            mem = leaky_update(mem, cur if const else cur[t], beta, thr, mode)
            spks.append(fast_sigmoid_spike(mem - thr, slope) * g)
        s = torch.stack(spks)                                   # [T, k, *S]
        if i == last:
            return s.sum(0)
        y = plan._apply(st.post, s.reshape(T * k, *s.shape[2:]))
        cur, const = y.reshape(T, k, *y.shape[1:]), False
    raise ConfigError(f"unknown spiking layer {layer!r}")  # pragma: no cover - checked at construction
