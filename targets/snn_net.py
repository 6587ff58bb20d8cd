"""Any snnTorch network as a MANGO target: detected, reset per stimulus, read out as firing rates.

Two ways of writing an snnTorch net are found in the wild, and both are accepted:

* a **step module** (snnTorch tutorial 6 style, :class:`~mango.targets.spiking.SpikingSequential`,
  an ``nn.Sequential`` of layers and ``init_hidden=True`` neurons): ``net(x)`` runs *one*
  time step and the neurons keep their state between calls. The target resets every
  neuron, presents the image for ``T`` steps (default: the net's own ``num_steps`` attribute
  when it has a positive integer one, as the embedded nets do with the ``T`` they were trained
  with; else 32) and reads each unit's firing
  rate (exact fast path :class:`~mango.targets.snn_fast.FastSNN` where the net allows);
* a **time-looping net** (snnTorch tutorial 5 style): ``forward`` loops over
  ``num_steps`` itself (``mem = self.lif.init_leaky()``, then ``for step in range(num_steps)``)
  and returns stacked records ``[T, B, ...]``. The target resets the neurons, calls
  ``net(images)`` once and reads each unit's rate over the steps the net ran, found
  by counting the neuron calls in one probe forward; ``T`` is the net's own
  (passing another ``T`` is refused with a message naming the net's).

Which kind a net is, is found by a probe: one forward of one image with a hook
counting the calls of each neuron (1: step module; n > 1, the same for all: a
net looping over n steps). Anything else (neurons called different numbers of
times, a forward that needs a spike sequence ``[T, B, ...]``, outputs without the
batch axis) is refused with a message saying what to write instead.

Values (per image): a term ``layer:unit`` of a spiking layer is the unit's firing
rate, spikes / T in [0, 1] (times the neuron's ``graded_spikes_factor``). When the objective
is that one term (``mango.maximize(net, "lif2:3")``, the usual case), the search score is by
default the **graded readout** of :mod:`mango.targets.spiking` (``readout="graded"``): the rate
plus a tie term below one spike from the unit's late peak and mean membrane and its first-spike
time, so a search sees progress on a unit that does not fire yet; the firing rate is recovered
exactly from it (``reported``) and is what results show. ``readout="rate"`` gives the plain
rate; objectives of several terms are always plain. A term of a
non-spiking layer (e.g. a ``Linear`` before a neuron) its mean output over the T
steps; ``mem(layer:unit)`` the unit's mean membrane over the T steps;
``output:c`` the rate of class neuron c of the last spiking layer (checked to be
what the net returns). Terms combine as in :mod:`mango.objectives`.
"""
from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mango.devices import module_device, to_module_dtype
from mango.errors import ConfigError, choices_hint
from mango.objectives import ObjectiveExpr, Term, as_objective, unit as unit_objective

from .models import load_model
from .snn_fast import FastSNN, fast_supported
from .spiking import (ENCODINGS, approach_rows, graded_score, poisson_spikes, rate_from_score, reference_run,
                      reset_states, spiking_layer_names, threshold_and_spike_value, unpack_neuron)
from .units import NEEDS_INPUT_SHAPE, OUTPUT, UnitSpec, check_repeatable, eval_mode, find_layer, list_layers

__all__ = ["SpikingNetTarget", "snn_unit", "DEFAULT_T"]

log = logging.getLogger(__name__)

#: time steps for a step module when T is not given
DEFAULT_T = 32

#: search scores of a one-unit objective: the graded readout (default) or the plain rate
NET_READOUTS = ("graded", "rate")


def _spk_mem(out: object, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer's (output, membrane) (see :func:`~mango.targets.spiking.unpack_neuron`): snnTorch neurons
    return ``spk`` or ``(spk, [synaptic currents, ...] mem)``."""
    spk, mem = unpack_neuron(out, module)
    if not isinstance(spk, torch.Tensor):
        raise ConfigError(f"layer output of type {type(spk).__name__} is not a tensor")
    return spk, (mem if isinstance(mem, torch.Tensor) else None)


def _whole(v: object) -> object:
    """``v`` as a Python int when it is a whole number (an int, numpy or 0-d tensor integer, or a float such as
    25.0), else ``v`` unchanged."""
    if isinstance(v, bool):
        return v
    try:
        return operator.index(v)            # int, numpy integers, 0-d integer tensors
    except TypeError:
        pass
    try:
        f = float(v)                        # floats, numpy floats, 0-d float tensors
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else v


class SpikingNetTarget:
    """An objective over units of an snnTorch network, reset per stimulus, over ``T`` steps.

    Args:
        net: step module or time-looping net (see the module docstring); it runs in eval mode, and each
            submodule gets its own train/eval mode back after every call.
        objective: ``"layer:unit"`` string or objective value (:mod:`mango.objectives`).
        T: time steps for a step module (default 32); for a time-looping net None or the
            net's own number of steps.
        encoding: ``"static"`` (the image at every step) or ``"poisson"`` (rate-coded spikes,
            step modules only; images in [0, 1]).
        seed: Poisson seed (per image, see :func:`~mango.targets.spiking.poisson_spikes`);
            None: fresh noise at every call (``noisy``).
        fast: use the exact fast path when the net is a supported ``nn.Sequential`` and every
            term reads a spiking layer.
        backend: the fast path's neuron kernel (``"torch"``, ``"auto"``, ``"compile"``).
        readout: ``"graded"`` (default: for a one-unit objective of a spiking layer, the graded
            score, see the module docstring) or ``"rate"`` (plain values).
        input_shape: per-sample input shape; when given, the net is probed now.

    Calling it: ``images [k, C, H, W]`` -> ``[k]`` float32. Every image starts from reset
    neurons, so its value does not depend on earlier calls or on its batch.
    """

    def __init__(self, net: nn.Module, objective: str | ObjectiveExpr, T: int | None = None,
                 encoding: str = "static", seed: int | None = 0, fast: bool = True, backend: str = "torch",
                 input_shape: Sequence[int] | None = None, readout: str = "graded") -> None:
        if not isinstance(net, nn.Module):
            raise ConfigError(f"SpikingNetTarget needs a torch.nn.Module, got {type(net).__name__}")
        self.spiking = spiking_layer_names(net)
        if not self.spiking:
            raise ConfigError(f"{type(net).__name__} has no snnTorch neurons: use a torch unit "
                              "(mango.maximize does this itself; command line: --target torch-unit)")
        if "" in self.spiking:
            raise ConfigError(f"{type(net).__name__} is a single snnTorch neuron; wrap it with the layers "
                              "that feed it (e.g. in a SpikingSequential)")
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; {choices_hint(encoding, ENCODINGS)}")
        if readout not in NET_READOUTS:
            raise ConfigError(f"unknown readout {readout!r}; {choices_hint(readout, NET_READOUTS)}")
        if T is not None and (isinstance(T, bool) or int(T) < 1):
            raise ConfigError(f"T (time steps) must be a positive integer or None, got {T!r}")
        self.net = net
        self._repeat_checked = False
        self.objective = as_objective(objective)
        self.T_requested = None if T is None else int(T)
        self.encoding = encoding
        self.seed = seed
        self.noisy = encoding == "poisson" and seed is None
        self.differentiable = encoding == "static"
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.terms: dict[Term, tuple[str, UnitSpec]] = {}
        for _, t in self.objective:
            if t.kind == "softmax":
                raise ConfigError(f"{t}: a spiking net's output is spikes, not logits; read the class "
                                  f"neuron's firing rate instead: 'output:{t.unit}'")
            layer = self.spiking[-1] if t.layer == OUTPUT else t.layer
            if t.layer != OUTPUT:
                find_layer(net, layer, extra=(OUTPUT,))
            if t.kind == "mem" and layer not in self.spiking:
                raise ConfigError(f"{t}: layer {layer!r} is not a spiking layer, so it has no membrane; "
                                  f"{choices_hint(layer, self.spiking)}")
            self.terms[t] = (layer, UnitSpec.make(t.unit, t.position))
        self.layers_read = list(dict.fromkeys(layer for layer, _ in self.terms.values()))
        self.reads_output = any(t.layer == OUTPUT for t in self.terms)
        self.readout = readout
        self._graded = self._graded_unit(net) if readout == "graded" else None
        self._P: int | None = None          # positions of the graded unit, known after the probe
        self.mode: str | None = None        # "step" or "loop", set by the probe
        self.T: int | None = None
        self.backend = backend
        self._fast_ok = bool(fast)
        self._fast: FastSNN | None = None
        if self.input_shape is not None:
            self._probe(torch.zeros((1, *self.input_shape), device=self.device))

    def _graded_unit(self, net: nn.Module) -> tuple[str, UnitSpec, float, float] | None:
        """``(layer, unit, threshold, spike value)`` when the objective is one plain term of a spiking
        layer (the graded readout applies), else None."""
        terms = list(self.objective)
        if len(terms) != 1 or terms[0][0] != 1.0 or terms[0][1].kind != "value":
            return None
        layer, spec = self.terms[terms[0][1]]
        if layer not in self.spiking:
            return None
        neuron = dict(net.named_modules())[layer]
        thr, g = threshold_and_spike_value(neuron)
        return (layer, spec, thr, g) if g > 0 else None

    @property
    def graded(self) -> bool:
        """Whether values are graded scores (see :meth:`reported`)."""
        return self._graded is not None

    @property
    def reported_name(self) -> str:
        """``"rate"`` for the graded readout (what :meth:`reported` recovers), else ``"value"``."""
        return "rate" if self.graded else "value"

    def reported(self, values: np.ndarray) -> np.ndarray:
        """Scores ``float64 [k]`` -> the firing rate (graded readout; exact) or the values themselves."""
        v = np.asarray(values, dtype=np.float64)
        if self._graded is None:
            return v.copy()
        if self._P is None:
            raise ConfigError("the graded readout's positions are known after the first evaluation (or give "
                              "input_shape=)")
        return rate_from_score(v, self._P, int(self.T), self._graded[3])

    # -- description -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the net's first parameter or buffer (CPU when it has none)."""
        return module_device(self.net)

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    def describe(self) -> str:
        how = f"T={self.T}" if self.T is not None else "T=?"
        return f"{type(self.net).__name__}: {self.objective} (spiking, {self.mode or 'unprobed'}, {how}, {self.encoding})"

    def layers(self, input_shape: Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """All layers with per-sample output shapes of one step (see :func:`~mango.targets.units.list_layers`);
        the spiking ones are :attr:`spiking`. ``input_shape`` defaults to the one given at construction."""
        shape = input_shape or self.input_shape
        if shape is None:
            raise ConfigError(NEEDS_INPUT_SHAPE)
        try:
            reset_states(self.net)
            rows = list_layers(self.net, shape)
        finally:
            reset_states(self.net)
        # "output" of a spiking net is its last spiking layer (a net looping over time returns [T, B, ...])
        last = dict(rows).get(self.spiking[-1])
        return [r for r in rows if r[0] != OUTPUT] + ([(OUTPUT, last)] if last is not None else [])

    # -- probe -------------------------------------------------------------
    def _probe(self, example: torch.Tensor) -> None:
        """One forward of one image: count neuron calls, record shapes, check the output."""
        x = example[:1].detach()
        modules = dict(self.net.named_modules())
        watch = list(dict.fromkeys([*self.spiking, *self.layers_read]))
        calls = {n: 0 for n in watch}
        first: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        spikes_last: list[torch.Tensor] = []

        def make(name: str):
            def hook(m, _inp, out):
                calls[name] += 1
                spk, mem = _spk_mem(out, m)
                first.setdefault(name, (spk.detach().clone(), mem))
                if name == self.spiking[-1]:
                    spikes_last.append(spk.detach().clone())
            return hook

        handles = [modules[n].register_forward_hook(make(n)) for n in watch]
        try:
            reset_states(self.net)
            with torch.no_grad(), eval_mode(self.net):
                out = self.net(self._cast(x))
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(
                f"{type(self.net).__name__}(images) failed on one image of shape {tuple(x.shape)}: "
                f"{type(e).__name__}: {e}. Either the images do not fit the net: pick a generator whose "
                "images it takes, or in Python pass transform= to mango.maximize to resize them (e.g. "
                "transform=lambda x: torch.nn.functional.interpolate(x, size=(28, 28))). Or forward expects "
                "something else: MANGO calls it with a static image batch [B, C, H, W]; a net whose forward "
                "takes a spike sequence [T, B, ...] (x[step]) must be written as one time step (forward(x) -> "
                "spikes of one step, neurons with init_hidden=True), or loop over its own num_steps presenting "
                "the same x at each step") from e
        finally:
            for h in handles:
                h.remove()
            reset_states(self.net)
        used = {n: c for n, c in calls.items() if n in self.spiking and c > 0}
        if not used:
            raise ConfigError(f"none of the snnTorch neurons of {type(self.net).__name__} "
                              f"({', '.join(self.spiking)}) ran in a forward pass")
        for layer in self.layers_read:
            if calls[layer] == 0:
                raise ConfigError(f"layer {layer!r} was not called in a forward pass of {type(self.net).__name__}")
        counts = set(used.values())
        if len(counts) > 1:
            raise ConfigError(
                f"the neurons of {type(self.net).__name__} ran different numbers of times in one forward "
                f"({used}), so the time steps are ambiguous. Write forward as one time step (MANGO then "
                "runs T steps with reset), or loop every neuron over the same num_steps")
        n = counts.pop()
        if n == 1:
            self.mode = "step"
            own = _whole(getattr(self.net, "num_steps", None))      # the steps the net declares (trained with)
            if own is not None and not (isinstance(own, int) and not isinstance(own, bool) and own > 0):
                if self.T_requested is None:
                    log.warning("%s.num_steps = %r is not a positive whole number, so it is not used as T; "
                                "running T=%d steps (give T= to choose)", type(self.net).__name__, own, DEFAULT_T)
                own = None
            self.T = self.T_requested or own or DEFAULT_T
        else:
            self.mode = "loop"
            if self.T_requested not in (None, n):
                raise ConfigError(
                    f"{type(self.net).__name__}.forward loops over {n} time steps itself, so T is the net's: "
                    f"pass T=None (or T={n}), or change the number of steps inside the net, not T={self.T_requested}")
            if self.encoding == "poisson":
                raise ConfigError(
                    f"{type(self.net).__name__}.forward loops over time itself and is given one static image, so "
                    "MANGO cannot feed it Poisson spikes: use encoding='static', or write forward as one time step")
            self.T = n
        for layer in self.layers_read:
            spk, _ = first[layer]
            if spk.ndim < 1 or spk.shape[0] != x.shape[0]:
                raise ConfigError(
                    f"layer {layer!r} output has shape {tuple(spk.shape)} for a batch of {x.shape[0]} image(s): "
                    "no leading batch axis. MANGO needs per-image outputs [B, ...] at every step")
        for t, (layer, spec) in self.terms.items():
            spec.check(tuple(first[layer][0].shape[1:]), layer)
            if t.kind == "mem" and first[layer][1] is None:
                raise ConfigError(f"{t}: layer {layer!r} exposes no membrane (neither returned nor in .mem)")
        if self.reads_output:
            self._check_output(out, spikes_last)
        if self._graded is not None:
            layer, spec = self._graded[0], self._graded[1]
            if first[layer][1] is None:
                log.info("layer %r exposes no membrane: plain firing rate instead of the graded readout", layer)
                self._graded = None
            else:
                self._P = int(spec.elements(first[layer][0]).shape[1])
        fast_why = "off (fast=False)"
        if self._fast_ok and self.mode == "step" and all(layer in self.spiking for layer in self.layers_read):
            with eval_mode(self.net):       # it runs in eval mode: dropout is then off
                fast_why = fast_supported(self.net)
                if fast_why is None:
                    self._fast = FastSNN(self.net, backend=self.backend)
        elif self._fast_ok:
            fast_why = "time-looping net or a non-spiking layer read"
        log.info("%s: %s mode, T=%d, fast path %s", type(self.net).__name__, self.mode, self.T,
                 "on" if self._fast is not None else f"off ({fast_why})")

    def _check_output(self, out: object, spikes_last: list[torch.Tensor]) -> None:
        """``output:c`` reads the last spiking layer: refuse if that is not what the net returns."""
        last = self.spiking[-1]
        o = out[0] if isinstance(out, (tuple, list)) and out else out
        ref = spikes_last[0] if self.mode == "step" else torch.stack(spikes_last)
        if not (isinstance(o, torch.Tensor) and o.shape == ref.shape and torch.equal(o.detach(), ref)):
            shape = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            if isinstance(o, torch.Tensor) and o.shape == ref.shape and o.is_floating_point() and \
                    not bool(torch.isfinite(o.detach()).all()):
                raise ConfigError(
                    f"{type(self.net).__name__} returns non-finite values (NaN or inf) in its first output "
                    f"{shape}, where 'output:<class>' expects the spikes of {last!r}; check the net's forward "
                    f"(or name a layer, e.g. '{last}:0')")
            raise ConfigError(
                f"'output:<class>' reads the firing rate of the last spiking layer {last!r}, but "
                f"{type(self.net).__name__} returns something else (first output {shape}, expected its spikes "
                f"{tuple(ref.shape)}); name the layer whose unit you want, e.g. '{last}:0'")

    # -- evaluation --------------------------------------------------------
    def _cast(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the floating dtype of the net's parameters (a float64 net takes float32 images)."""
        return to_module_dtype(self.net, images)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoding == "poisson":
            return poisson_spikes(images, self.T, self.seed)
        return images

    def _loop_run(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Time-looping net: reset, one forward, sums of (output, membrane) of each layer read."""
        modules = dict(self.net.named_modules())
        acc: dict[str, list] = {n: [] for n in self.layers_read}

        def make(name: str):
            def hook(m, _inp, out):
                spk, mem = _spk_mem(out, m)
                a = acc[name]
                if not a:
                    a.extend([spk.clone(), None if mem is None else mem.clone()])
                else:
                    a[0] = a[0] + spk
                    if mem is not None and a[1] is not None:
                        a[1] = a[1] + mem
            return hook

        handles = [modules[n].register_forward_hook(make(n)) for n in self.layers_read]
        try:
            reset_states(self.net)
            self.net(images)
        finally:
            for h in handles:
                h.remove()
            reset_states(self.net)
        return {n: (v[0], v[1]) for n, v in acc.items()}

    def _step_run(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        x = self._input(images)
        seq = self.encoding == "poisson"
        grad = torch.is_grad_enabled() and images.requires_grad
        if self._fast is not None and not grad:
            out = {}
            with torch.no_grad():
                for layer in self.layers_read:
                    want_mem = any(t.kind == "mem" and lay == layer for t, (lay, _) in self.terms.items())
                    out[layer] = self._fast.run(x, self.T, layer, want_mem=want_mem, sequence=seq)
            return out
        return reference_run(self.net, x, self.T, self.layers_read, sequence=seq)

    #: what makes one image's value depend on its batch or the call (see :func:`~.units.check_repeatable`)
    _CAUSES = ("The net draws random numbers in forward (e.g. spikegen.rate: use encoding='poisson' with a seed "
               "instead, which MANGO controls), keeps state between calls that MANGO does not reset (a membrane "
               "kept on the module, e.g. self.mem, passed back in at the next call), or mixes the images of a "
               "batch")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images [k, C, H, W]`` -> the objective's value per image ``[k]`` (rates in [0, 1] for one unit)."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if self.mode is None:
            self._probe(images)
        images = self._cast(images)
        with eval_mode(self.net):
            values = self._values(images)
        gradient_call = torch.is_grad_enabled() and images.requires_grad     # the plain rate, not the graded score
        if not self._repeat_checked and not self.noisy and not gradient_call:
            self._repeat_checked = True
            check_repeatable(self, images, values, self.net, self._CAUSES)
        return values

    def _values(self, images: torch.Tensor) -> torch.Tensor:
        if self._graded is not None and not (torch.is_grad_enabled() and images.requires_grad):
            return self._graded_value(images)
        sums = self._loop_run(images) if self.mode == "loop" else self._step_run(images)
        T = float(self.T)

        def value(t: Term) -> torch.Tensor:
            layer, spec = self.terms[t]
            s, m = sums[layer]
            a = m if t.kind == "mem" else s
            if a is None:
                raise ConfigError(f"{t}: layer {layer!r} gave no membrane")
            return (spec.select(a) / T).float()

        return self.objective.combine(value)

    def approach(self, images: torch.Tensor) -> list[dict[str, Any]] | None:
        """How close each image brought the unit to firing (as :meth:`~mango.targets.spiking.SpikingTarget.approach`:
        spikes, the late membrane peak against threshold, and where), for a one-unit objective of a spiking layer
        read with the graded readout; None otherwise (the statistics are the graded readout's)."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if self.mode is None:
            self._probe(images)
        if self._graded is None:
            return None
        spec = self._graded[1]
        with torch.no_grad(), eval_mode(self.net):
            st = self._graded_stats(self._cast(images))
        rest = tuple(int(v) for v in st.late_peak.shape[2:]) if spec.position is None else ()
        return approach_rows(spec.elements(st.n_spikes), spec.elements(st.late_peak), rest, self._graded[2])

    def _graded_value(self, images: torch.Tensor) -> torch.Tensor:
        """The graded score of the one unit ``[k]`` float64 (gradient steps use the plain rate)."""
        layer, spec, thr, g = self._graded
        st = self._graded_stats(images)
        return graded_score(spec.elements(st.n_spikes), spec.elements(st.late_peak), spec.elements(st.first),
                            int(self.T), thr, g, mem_sum=spec.elements(st.mem_sum))

    def _graded_stats(self, images: torch.Tensor) -> Any:
        """The graded unit's layer statistics (:class:`~mango.targets.snn_fast.ScanStats`, ``[k, *S]``)."""
        from .snn_fast import ScanStats

        layer, spec, thr, g = self._graded
        if self.mode == "loop":
            modules = dict(self.net.named_modules())
            acc: list = []
            step = [0]

            def hook(m, _inp, out):
                spk, mem = _spk_mem(out, m)
                if not acc:
                    acc.append(ScanStats.zeros(tuple(mem.shape), int(self.T), mem.dtype, mem.device))
                acc[0].update(step[0], mem.detach(), spk.detach() != 0)
                step[0] += 1

            h = modules[layer].register_forward_hook(hook)
            try:
                reset_states(self.net)
                with torch.no_grad():
                    self.net(images)
            finally:
                h.remove()
                reset_states(self.net)
            st = acc[0]
        else:
            x = self._input(images.contiguous())
            seq = self.encoding == "poisson"
            with torch.no_grad():
                if self._fast is not None:
                    _, st = self._fast.run_stats(x, self.T, layer, sequence=seq)
                else:
                    _, st = reference_run(self.net, x, self.T, [layer], record="stats", sequence=seq)[layer]
        return st


def snn_unit(model: nn.Module | str, objective: str | None = None, layer: str | None = None,
             unit: int | Sequence[int] = 0, position: Sequence[int] | None = None, T: int | None = None,
             encoding: str = "static", seed: int | None = 0, fast: bool = True, backend: str = "torch",
             input_shape: Sequence[int] | None = None, device: str = "cpu",
             trust_pickle: bool = False, readout: str = "graded") -> SpikingNetTarget:
    """A unit (firing rate) or objective of a user's snnTorch net: a module, a file or a factory.

    ``model``: an ``nn.Module``, a factory ``"package.module:function"``, or a pickled module file
    with ``trust_pickle=True`` (it runs code from the file while loading)
    (the command line's way to take a net whose neurons hold a ``snntorch.surrogate``
    function, which cannot be pickled). Either ``objective`` (``"lif2:3 + 0.01*mem(lif2:3)"``)
    or ``layer``/``unit``/``position`` (default: the last spiking layer, unit 0). See
    :class:`SpikingNetTarget` for T, step modules and time-looping nets.
    """
    net = load_model(model, device, trust_pickle)
    if objective is not None:
        if layer not in (None, "") or unit != 0 or position is not None:
            raise ConfigError("give either objective= or layer/unit/position, not both "
                              f"(objective={objective!r}, layer={layer!r}, unit={unit!r})")
        obj = as_objective(objective)
    else:
        spec = UnitSpec.make(unit, position)
        names = spiking_layer_names(net)
        default = names[-1] if names else OUTPUT          # no neurons: SpikingNetTarget says what to do
        obj = unit_objective(default if layer in (None, "") else str(layer), spec.unit, spec.position)
    return SpikingNetTarget(net, obj, T=T, encoding=encoding, seed=seed, fast=fast, backend=backend,
                            input_shape=input_shape, readout=readout)
