"""A unit of any ``torch.nn.Module`` as a MANGO target, read through a forward hook.

    target = UnitTarget(model, layer="features.3", unit=12)               # channel mean
    target = UnitTarget(model, layer="features.3", unit=12, position=(4, 4))
    target = UnitTarget(model, unit=3)                                    # class logit 3
    target = UnitTarget(model, unit=3, output="softmax")                  # class probability
    y = target(images)  # images [k, C, H, W] -> y [k] float

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

from mango.errors import ConfigError, choices_hint

from .units import OUTPUT, UnitSpec, find_layer, layer_names, list_layers, output_shapes

__all__ = ["UnitTarget", "list_layers"]

log = logging.getLogger(__name__)

_OUTPUTS = ("raw", "logit", "softmax")

#: what to do instead of passing TorchScript (ScriptModules refuse forward hooks)
_SCRIPT_HINT = ("TorchScript modules do not support the forward hooks a unit is read through. "
                "Use the eager (Python) module instead: save it with torch.save(model, path) and pass "
                "that file, or build the architecture in Python, load its state_dict and pass the module")


class _Reached(Exception):
    """Raised inside the hook to stop the forward pass after the target layer."""


class UnitTarget:
    """One unit of ``model``: a channel's spatial mean, a channel at a position, or a class.

    Args:
        model: any module mapping ``[k, C, H, W]`` to something; put into eval mode.
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

    noisy = False
    differentiable = True

    def __init__(self, model: nn.Module, layer: str | None = None, unit: int | Sequence[int] = 0,
                 position: Sequence[int] | None = None, output: str = "raw",
                 input_shape: Sequence[int] | None = None, stop_early: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"UnitTarget needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise ConfigError(f"{type(model).__name__} is a TorchScript module; {_SCRIPT_HINT}")
        if output not in _OUTPUTS:
            raise ConfigError(f"unknown output {output!r}; {choices_hint(output, _OUTPUTS)}")
        self.model = model.eval()
        self.layer = OUTPUT if layer in (None, "", OUTPUT) else str(layer)
        self.module = None if self.layer == OUTPUT else find_layer(model, self.layer, extra=(OUTPUT,))
        if isinstance(self.module, torch.jit.ScriptModule):
            raise ConfigError(f"layer {self.layer!r} is a TorchScript module; {_SCRIPT_HINT}")
        self.spec = UnitSpec.make(unit, position)
        self.output = "raw" if output == "logit" else output
        self.stop_early = bool(stop_early)
        self._checked = False
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if self.input_shape is not None:
            self._check(torch.zeros((1, *self.input_shape), device=self.device))

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        for b in self.model.buffers():
            return b.device
        return torch.device("cpu")

    def describe(self) -> str:
        return f"{type(self.model).__name__}[{self.layer}].{self.spec.describe()}" + (
            " softmax" if self.output == "softmax" else "")

    def layers(self, input_shape: Sequence[int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """The model's layers and per-sample output shapes (see :func:`list_layers`);
        ``input_shape`` defaults to the one given at construction."""
        shape = input_shape or self.input_shape
        if shape is None:
            raise ConfigError("layers() needs the per-sample input shape, e.g. (1, 16, 16)")
        return list_layers(self.model, shape)

    def _check(self, example: torch.Tensor) -> None:
        shapes = output_shapes(self.model, example[:1])
        if self.layer not in shapes:
            valid = [n for n in layer_names(self.model) if n in shapes] + [OUTPUT]
            raise ConfigError(f"layer {self.layer!r} produced no tensor output in a forward pass; "
                              f"{choices_hint(self.layer, valid)}")
        self.spec.check(shapes[self.layer][1:], self.layer)
        self._checked = True

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
        if self.module is None:
            return self._value(_first(self.model(images))).float()
        box: list[torch.Tensor] = []

        def hook(_m, _inp, out):
            box.append(self._value(_first(out)))
            if self.stop_early:
                raise _Reached

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(images)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not box:
            raise ConfigError(f"layer {self.layer!r} was not called in the forward pass")
        return box[0].float()


def _first(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"layer output of type {type(out).__name__} is not a tensor")


def torch_unit(model: nn.Module | str, layer: str | None = None, unit: int | Sequence[int] = 0,
               position: Sequence[int] | None = None, output: str = "raw",
               input_shape: Sequence[int] | None = None, device: str = "cpu") -> UnitTarget:
    """A unit of a user's torch model (a module, or a path to a full pickled eager module).

    A full pickled module (``torch.save(model, path)``) is loaded with
    ``torch.load(weights_only=False)``, so only load files you trust. A TorchScript
    file (``torch.jit.save``) is refused with a :class:`ConfigError` naming the file:
    ScriptModules do not allow the forward hooks a unit is read through.
    """
    if isinstance(model, str):
        from pathlib import Path
        p = Path(model)
        if not p.is_file():
            raise ConfigError(f"model file {str(p)!r} not found")
        try:
            m = torch.jit.load(str(p), map_location=device)
        except Exception:
            try:
                m = torch.load(str(p), map_location=device, weights_only=False)
            except Exception as e:
                raise ConfigError(f"cannot load a torch module from {str(p)!r}: {e}") from e
        else:
            raise ConfigError(f"{str(p)!r} is a TorchScript file; {_SCRIPT_HINT}")
        if not isinstance(m, nn.Module):
            raise ConfigError(f"{str(p)!r} holds a {type(m).__name__}, not a torch module "
                              "(a state_dict needs its architecture: build the module in Python)")
        model = m
    return UnitTarget(model.to(device), layer=layer, unit=unit, position=position, output=output,
                      input_shape=input_shape)
