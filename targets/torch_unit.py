"""A unit of any ``torch.nn.Module`` as a MANGO target, read through a forward hook.

    target = UnitTarget(model, layer="features.3", unit=12)               # channel mean
    target = UnitTarget(model, layer="features.3", unit=12, position=(4, 4))
    target = UnitTarget(model, unit=3)                                    # class logit 3
    target = UnitTarget(model, unit=3, output="softmax")                  # class probability
    y = target(images)  # images [k, C, H, W] -> y [k] float
    target = ObjectiveTarget(model, "features.3:12 - 0.5*output:3")      # a weighted sum of units

A module containing snnTorch neurons is refused: one forward pass of a spiking
net is one time step whose value depends on the earlier calls. Spiking nets go
through :func:`mango.targets.snn_net.snn_unit` (``--target snn-unit``), which
resets the neurons per stimulus and reads firing rates over ``T`` steps.

The hook is registered for each call and removed right after it (also on error),
keeps only the selected unit's ``[k]`` values (no activation tensors are stored)
and, by default, stops the forward pass once the layer has run (``stop_early``),
so later layers cost nothing. Gradients flow when the caller enables them
(``differentiable = True``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from mango.devices import module_device, to_module_dtype
from mango.errors import ConfigError, choices_hint
from mango.objectives import OUTPUT_NAMES, ObjectiveExpr, Term, as_objective

from .models import SCRIPT_HINT as _SCRIPT_HINT
from .models import load_model, spiking_neuron_names
from .units import (NEEDS_INPUT_SHAPE, OUTPUT, WRAP_HINT, UnitSpec, check_repeatable, describe_output,
                    eval_mode, find_layer, layer_names, list_layers, output_shapes, probe_input_shape)

log = logging.getLogger(__name__)

#: modules that put their features on the last axis: with more than one axis per sample (tokens of a
#: transformer, channels-last maps) a unit (the axis after the batch) is then not one of their features
_FEATURES_LAST = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.Embedding)

__all__ = ["UnitTarget", "ObjectiveTarget", "torch_unit", "list_layers", "refuse_spiking"]

_OUTPUTS = ("raw", "logit", "softmax")


def refuse_spiking(model: nn.Module, what: str = "torch_unit") -> None:
    """Raise :class:`ConfigError` if ``model`` contains snnTorch neurons, naming the spiking route."""
    names = spiking_neuron_names(model)
    if names:
        shown = ", ".join(repr(n or "(the model itself)") for n in names[:6]) + (" ..." if len(names) > 6 else "")
        raise ConfigError(
            f"{type(model).__name__} contains snnTorch neurons ({shown}); {what} would read one time step "
            "of it, whose value depends on earlier calls. Use the spiking route, which resets the neurons "
            "for every stimulus and reads firing rates over T steps: in Python mango.maximize(net, "
            "'<layer>:<unit>', ...) or mango.targets.snn_net.snn_unit(net, ...); on the command line "
            "--target snn-unit --target-param model=package.module:function")


def _warn_output_clash(model: nn.Module) -> None:
    """Log a warning when a submodule's name is one of the names meaning "the model's output"."""
    names = dict(model.named_modules())
    for n in OUTPUT_NAMES:
        if n in names:
            log.warning("%s has a submodule named %r, but %s in an objective mean the model's own output; "
                        "this reads the model's output, not that submodule", type(model).__name__, n,
                        " and ".join(repr(v) for v in OUTPUT_NAMES))


class _Reached(Exception):
    """Raised inside the hook to stop the forward pass after the target layer."""


class _ModelTarget:
    """What both torch-model targets share: the model's device, its layer listing and the
    one-forward check that every read layer produces a tensor with the unit in range."""

    noisy = False
    differentiable = True
    model: nn.Module
    input_shape: tuple[int, ...] | None
    _checked: bool
    _repeat_checked = False

    #: what makes one image's value depend on its batch or on the call (see :func:`check_repeatable`)
    _CAUSES = ("The model mixes the images of a batch (e.g. BatchNorm with track_running_stats=False, or "
               "statistics over the batch axis) or draws random numbers in forward (e.g. F.dropout(x, training=True))")

    def _repeat_check(self, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """On the first call, :func:`check_repeatable` (once); returns ``values``."""
        if not self._repeat_checked:
            self._repeat_checked = True
            check_repeatable(self, images, values, self.model, self._CAUSES)
        return values

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU when it has none)."""
        return module_device(self.model)

    def layers(self, input_shape: Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """The model's layers and per-sample output shapes (see :func:`list_layers`), without modules that
        run more than once per forward pass (a unit of them is refused); ``input_shape`` defaults to the one
        given at construction."""
        shape = input_shape or self.input_shape
        if shape is None:
            raise ConfigError(NEEDS_INPUT_SHAPE)
        calls: dict[str, int] = {}
        rows = list_layers(self.model, shape, calls=calls)
        return [r for r in rows if calls.get(r[0], 1) == 1]     # a module run twice cannot be read: not listed

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the floating dtype of the model (a float64 or half model takes float32 images)."""
        return to_module_dtype(self.model, images)

    def _check_reads(self, example: torch.Tensor, reads: Sequence[tuple[str, UnitSpec]]) -> None:
        """One forward of ``example[:1]``; each ``(layer, spec)`` must name a layer that runs once per forward
        pass with a tensor output whose per-sample shape holds the unit, and the model's output, when read,
        must be one tensor (else :class:`ConfigError` with the choices or the way out)."""
        calls: dict[str, int] = {}
        returned: list[object] = []
        shapes = output_shapes(self.model, self._input(example[:1]), calls=calls, returned=returned)
        modules = dict(self.model.named_modules())
        for layer, spec in reads:
            if layer == OUTPUT and returned and (why := describe_output(returned[0])) is not None:
                raise ConfigError(f"the model returns {why}; 'output' and 'softmax' terms read one tensor: "
                                  f"{WRAP_HINT}")
            if layer not in shapes:
                valid = [n for n in layer_names(self.model) if n in shapes] + [OUTPUT]
                what = "returned no tensor" if calls.get(layer) else "was not called"
                raise ConfigError(f"layer {layer!r} {what} in a forward pass; {choices_hint(layer, valid)}")
            if calls.get(layer, 1) > 1:
                parent = layer.rpartition(".")[0]
                raise ConfigError(
                    f"layer {layer!r} runs {calls[layer]} times in one forward pass (one module used at "
                    f"{calls[layer]} places), so a unit of it is ambiguous; give each use its own module "
                    "(e.g. separate nn.ReLU instances), or read another layer"
                    + (f", such as the module that contains it, {parent!r}" if parent else ""))
            spec.check(shapes[layer][1:], layer)
            m = modules.get(layer)
            if isinstance(m, _FEATURES_LAST) and len(shapes[layer]) > 2:
                log.warning("layer %r (%s) has per-sample output %s with its features on the last axis; a unit "
                            "indexes the first axis after the batch (size %d here, e.g. tokens), averaged over "
                            "the rest, as for the channels of a conv map", layer, type(m).__name__,
                            tuple(shapes[layer][1:]), shapes[layer][1])
        self._checked = True


class UnitTarget(_ModelTarget):
    """One unit of ``model``: a channel's spatial mean, a channel at a position, or a class.

    Args:
        model: any module mapping ``[k, C, H, W]`` to something; it runs in eval mode, and each
            submodule gets its own train/eval mode back after every call (:func:`~.units.eval_mode`).
        layer: dotted submodule name (see :func:`list_layers`), or ``"output"``/``None``
            for the model's output (class logits).
        unit: channel / neuron / class index, or ``(channel, y, x)``.
        position: optional ``(y, x)`` (the axes after the channel axis).
        output: ``"raw"`` (= ``"logit"``): the value as computed; ``"softmax"``: the
            softmax over axis 1 of the layer output first (class probability in [0, 1]).
        input_shape: per-sample input shape ``(C, H, W)``; when given the layer and unit
            are checked now (one forward of zeros), otherwise at the first call.
        stop_early: stop the forward pass after ``layer`` (not for ``"output"``).

    Calling it: ``images [k, C, H, W]`` on the model's device -> ``[k]`` float32.
    """

    def __init__(self, model: nn.Module, layer: str | None = None, unit: int | Sequence[int] = 0,
                 position: Sequence[int] | None = None, output: str = "raw",
                 input_shape: Sequence[int] | None = None, stop_early: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"UnitTarget needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise ConfigError(f"{type(model).__name__} is a TorchScript module; {_SCRIPT_HINT}")
        refuse_spiking(model, "UnitTarget")
        if output not in _OUTPUTS:
            raise ConfigError(f"unknown output {output!r}; {choices_hint(output, _OUTPUTS)}")
        self.model = model
        self.layer = OUTPUT if layer in (None, "", OUTPUT) else str(layer)
        self.module = None if self.layer == OUTPUT else find_layer(model, self.layer, extra=(OUTPUT,))
        if self.module is None:
            _warn_output_clash(model)
        if isinstance(self.module, torch.jit.ScriptModule):
            raise ConfigError(f"layer {self.layer!r} is a TorchScript module; {_SCRIPT_HINT}")
        self.spec = UnitSpec.make(unit, position)
        self.output = "raw" if output == "logit" else output
        self.stop_early = bool(stop_early)
        self._checked = False
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if self.input_shape is not None:
            probe_input_shape(self._check, self.input_shape, model, self.device)

    def describe(self) -> str:
        return f"{type(self.model).__name__}[{self.layer}].{self.spec.describe()}" + (
            " softmax" if self.output == "softmax" else "")

    def _check(self, example: torch.Tensor) -> None:
        self._check_reads(example, [(self.layer, self.spec)])

    def _value(self, out: torch.Tensor) -> torch.Tensor:
        if self.output == "softmax":
            out = torch.softmax(out, dim=1)
        return self.spec.select(out)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images [k, C, H, W]`` -> the unit's values ``[k]``."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if not self._checked:
            self._check(images)
        images = self._input(images)
        if self.module is None:
            with eval_mode(self.model):
                return self._repeat_check(images, self._value(_first(self.model(images))).float())
        box: list[torch.Tensor] = []

        def hook(_m, _inp, out):
            if not box:     # the value is taken now: an in-place operation later in forward must not change it
                box.append(self._value(_first(out)).clone())
            if self.stop_early:
                raise _Reached

        handle = self.module.register_forward_hook(hook)
        try:
            with eval_mode(self.model):
                self.model(images)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not box:
            raise ConfigError(f"layer {self.layer!r} was not called in the forward pass")
        return self._repeat_check(images, box[0].float())


def _first(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"layer output of type {type(out).__name__} is not a tensor")


class ObjectiveTarget(_ModelTarget):
    """A weighted sum of units of ``model`` (an :class:`~mango.objectives.ObjectiveExpr`), one forward pass.

    Args:
        model: any non-spiking module mapping ``[k, C, H, W]`` to something; run in eval mode (each
            submodule's own mode is given back after every call).
        objective: ``"layer:unit"`` string or objective value (see :mod:`mango.objectives`):
            channel means, channels at positions, ``output:c`` (class logit), ``softmax:c``
            (class probability); ``mem(...)`` terms need a spiking net and are refused.
        input_shape: per-sample input shape; when given, layers and units are checked now.
        stop_early: stop the forward pass once every layer read has run (unless the output is read).

    Calling it: ``images [k, C, H, W]`` -> ``sum_i w_i * unit_i [k]`` float32; each term's value
    equals :class:`UnitTarget`'s for the same unit. Gradients flow when enabled.
    """

    def __init__(self, model: nn.Module, objective: str | ObjectiveExpr,
                 input_shape: Sequence[int] | None = None, stop_early: bool = True) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise ConfigError(f"{type(model).__name__} is a TorchScript module; {_SCRIPT_HINT}")
        refuse_spiking(model, "a torch unit objective")
        self.model = model
        self.objective = as_objective(objective)
        self.stop_early = bool(stop_early)
        self.modules: dict[str, nn.Module] = {}
        self.specs: dict[Term, UnitSpec] = {}
        for _, t in self.objective:
            if t.kind == "mem":
                raise ConfigError(f"{t} reads a membrane potential, but {type(model).__name__} has no "
                                  "snnTorch neurons; use a plain unit such as "
                                  f"'{t.layer}:{t.unit}'")
            if t.layer != OUTPUT and t.layer not in self.modules:
                m = find_layer(model, t.layer, extra=(OUTPUT,))
                if isinstance(m, torch.jit.ScriptModule):
                    raise ConfigError(f"layer {t.layer!r} is a TorchScript module; {_SCRIPT_HINT}")
                self.modules[t.layer] = m
            self.specs[t] = UnitSpec.make(t.unit, t.position)
        if OUTPUT in self.objective.layers:
            _warn_output_clash(model)
        self._checked = False
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if self.input_shape is not None:
            probe_input_shape(self._check, self.input_shape, model, self.device)

    def describe(self) -> str:
        return f"{type(self.model).__name__}: {self.objective}"

    def _check(self, example: torch.Tensor) -> None:
        self._check_reads(example, [(t.layer, spec) for t, spec in self.specs.items()])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images [k, C, H, W]`` -> the objective's values ``[k]``."""
        if images.ndim < 2:
            raise ConfigError(f"images must have a batch axis, got shape {tuple(images.shape)}")
        if not self._checked:
            self._check(images)
        images = self._input(images)
        vals: dict[Term, torch.Tensor] = {}
        done: set[str] = set()
        need_output = OUTPUT in self.objective.layers
        stop = self.stop_early and not need_output

        def value(t: Term, a: torch.Tensor) -> torch.Tensor:
            if t.kind == "softmax":
                a = torch.softmax(a, dim=1)
            return self.specs[t].select(a).float()

        def make(name: str):
            def hook(_m, _inp, out):
                if name not in done:    # values are taken now: a later in-place operation must not change them
                    done.add(name)
                    a = _first(out)
                    vals.update({t: value(t, a).clone() for t in self.specs if t.layer == name})
                if stop and len(done) == len(self.modules):
                    raise _Reached
            return hook

        handles = [m.register_forward_hook(make(n)) for n, m in self.modules.items()]
        try:
            with eval_mode(self.model):
                out = self.model(images)
            if need_output:
                a = _first(out)
                vals.update({t: value(t, a) for t in self.specs if t.layer == OUTPUT})
        except _Reached:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.modules if n not in done]
        if missing:
            raise ConfigError(f"layer(s) {missing} were not called in the forward pass")

        return self._repeat_check(images, self.objective.combine(vals.__getitem__))


def torch_unit(model: nn.Module | str, layer: str | None = None, unit: int | Sequence[int] = 0,
               position: Sequence[int] | None = None, output: str = "raw",
               input_shape: Sequence[int] | None = None, device: str = "cpu",
               objective: str | None = None, trust_pickle: bool = False) -> UnitTarget | ObjectiveTarget:
    """A unit of a user's (non-spiking) torch model: a module, a file or a factory.

    ``model``: an ``nn.Module``; a Python factory ``"package.module:function"`` called with no
    arguments; or a full pickled eager module file (``torch.save(model, path)``) only with
    ``trust_pickle=True`` (loading it runs code from the file; refused unopened otherwise). A TorchScript file is refused
    (ScriptModules do not allow the forward hooks a unit is read through), and so is a model
    with snnTorch neurons (use ``snn-unit``). ``objective``: instead of ``layer``/``unit``/
    ``position``, a ``"layer:unit"`` string or weighted sum such as ``"conv2:5 - 0.5*output:3"``
    (see :mod:`mango.objectives`).
    """
    m = load_model(model, device, trust_pickle)
    if objective is not None:
        if layer not in (None, "") or unit != 0 or position is not None or output != "raw":
            raise ConfigError("give either objective= or layer/unit/position/output, not both "
                              f"(objective={objective!r}, layer={layer!r}, unit={unit!r})")
        return ObjectiveTarget(m, objective, input_shape=input_shape)
    return UnitTarget(m, layer=layer, unit=unit, position=position, output=output, input_shape=input_shape)
