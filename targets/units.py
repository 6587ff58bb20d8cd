"""Layers and units of torch models: name lookup, output shapes, unit selection.

A *unit* of a layer whose output has shape ``[B, *S]`` (per-sample shape ``S``) is

* a **channel** ``unit=c`` with ``position=None``: for ``S = (C, H, W)`` (or any
  ``(C, ...)`` with more than one axis) the mean of channel ``c`` over space, for
  ``S = (N,)`` neuron ``c`` (a class logit when the layer is the model output);
* a **channel at a position** ``unit=c, position=(y, x)``: the single value
  ``out[:, c, y, x]``.

Errors name the bad layer or unit and list the valid choices, nearest first.
"""
from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mango.devices import module_device, module_dtype
from mango.errors import ConfigError, MangoError, choices_hint
from mango.modes import eval_mode

__all__ = ["OUTPUT", "UnitSpec", "WRAP_HINT", "check_repeatable", "describe_output", "eval_mode", "find_layer",
           "layer_names", "list_layers", "output_shapes"]

log = logging.getLogger(__name__)

#: the layer name that means "the model's own output" (class logits for a classifier)
OUTPUT = "output"


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every submodule (the model itself excluded), in registration order."""
    return [n for n, _ in model.named_modules() if n]


def find_layer(model: nn.Module, name: str, valid: Sequence[str] | None = None,
               what: str = "layer", extra: Sequence[str] = ()) -> nn.Module:
    """The submodule called ``name`` (dotted path).

    Args:
        valid: restrict the choices (e.g. to spiking layers); default all submodules.
        extra: further names the caller accepts itself (e.g. :data:`OUTPUT`); they are
            listed among the valid choices of the error but not resolved here.

    Raises:
        ConfigError: unknown name; lists the valid names (and ``extra``), nearest first.
    """
    choices = list(valid) if valid is not None else layer_names(model)
    modules = dict(model.named_modules())
    if name not in choices or name not in modules:
        raise ConfigError(f"unknown {what} {name!r}; {choices_hint(name, [*choices, *extra])}")
    return modules[name]


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def output_shapes(model: nn.Module, example: torch.Tensor, order: list[str] | None = None,
                  calls: dict[str, int] | None = None,
                  returned: list[object] | None = None) -> dict[str, tuple[int, ...]]:
    """Per-layer output shapes (batch axis included) for one no-grad forward of ``example``.

    The model runs in eval mode (:func:`eval_mode`: a BatchNorm's running statistics are not
    touched) and hooks are removed afterwards. For modules returning tuples (snnTorch neurons
    return ``(spk, mem)``), the first tensor's shape is reported; the model's own
    output is under ``"output"`` when it is a tensor or a sequence starting with one;
    TorchScript submodules (which refuse hooks) are left out. ``order``, when given,
    is filled with the layer names in the order their forwards finish; ``calls`` with
    how many times each layer ran (a module used at two places in ``forward`` runs twice;
    its shape is that of its first call); ``returned`` gets the model's output appended.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def make(name: str):
        def hook(_m, _inp, out):
            if calls is not None:
                calls[name] = calls.get(name, 0) + 1
            t = _first_tensor(out)
            if t is not None and name not in shapes:
                shapes[name] = tuple(t.shape)
                if order is not None:
                    order.append(name)
        return hook

    for name, m in model.named_modules():
        if name and not isinstance(m, torch.jit.ScriptModule):     # TorchScript refuses hooks: left out
            handles.append(m.register_forward_hook(make(name)))
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(example)
        if returned is not None:
            returned.append(out)
        t = _first_tensor(out)
        if t is not None:
            shapes[OUTPUT] = tuple(t.shape)
    finally:
        for h in handles:
            h.remove()
    return shapes


def check_repeatable(call: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, values: torch.Tensor,
                     model: nn.Module, causes: str) -> bool:
    """Score ``images[:1]`` again on its own with ``call`` and log a warning when the value differs from
    ``values[0]``, its value within the batch ``images`` (a search takes a code's value as fixed: a model
    that mixes the images of a batch, draws random numbers in forward or keeps state between calls gives
    each code a value that depends on when and beside what it was scored). ``causes`` lists what may do it.

    Returns:
        Whether the two values agree: relative to 1e-4 or 16 of the model dtype's epsilon, whichever is
        larger (1e-4 for float32, 0.016 for half, 0.125 for bfloat16: sums over a batch differ in the
        last bits), absolute to 1e-6.
    """
    with torch.no_grad():
        again = call(images[:1].detach())
    a, b = float(values.detach().reshape(-1)[0]), float(again.reshape(-1)[0])
    dtype = module_dtype(model) or torch.float32
    rel = max(1e-4, 16 * torch.finfo(dtype).eps) if dtype.is_floating_point else 1e-4
    if math.isclose(a, b, rel_tol=rel, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)):
        return True
    log.warning("%s gives the same image different values: %.6g within a batch of %d, %.6g on its own right "
                "after. %s. A search takes each image's value as fixed, so its best value is then partly luck "
                "or the batch's doing; make forward give one image one value", type(model).__name__, a,
                images.shape[0], b, causes)
    return False


def describe_output(out: object) -> str | None:
    """Why a model's output ``out`` cannot be read as one tensor (a dict, a tuple of several tensors,
    something else), or None when it is a tensor (or a one-element sequence holding one)."""
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, (tuple, list)):
        tensors = [tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else type(v).__name__ for v in out]
        if len(out) == 1 and isinstance(out[0], torch.Tensor):
            return None
        return f"a {type(out).__name__} of {len(out)} items (per-sample shapes or types: {tensors})"
    if isinstance(out, dict):
        return f"a {type(out).__name__} with keys {list(out)[:8]}"
    return f"a {type(out).__name__}"


#: how to make a model whose output is not one tensor readable (in :func:`describe_output`'s errors)
WRAP_HINT = ("wrap it in a module whose forward returns the one tensor to read, e.g. "
             "class Pick(torch.nn.Module): def __init__(self, m): super().__init__(); self.m = m; "
             "def forward(self, x): return self.m(x)[1]  (or [\"logits\"] for a dict)")


def list_layers(model: nn.Module, input_shape: Sequence[int],
                calls: dict[str, int] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """``[(layer name, per-sample output shape), ...]`` in execution order, ending with ``"output"``.

    Args:
        model: any ``nn.Module``.
        input_shape: one sample's shape ``(C, H, W)`` (a leading batch axis of 1 is
            also accepted). The model runs once on zeros on its own device.

    Layers that are not called in a forward pass (unused submodules) are left out; ``calls``, when given,
    gets how many times each layer ran (see :func:`output_shapes`).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) >= 1 and shape[0] == 1 and len(shape) == 4:
        shape = shape[1:]
    dev = module_device(model)
    example = torch.zeros((1, *shape), device=dev, dtype=module_dtype(model) or torch.float32)
    order: list[str] = []
    shapes = output_shapes(model, example, order, calls=calls)
    out = [(n, shapes[n][1:]) for n in order]
    if OUTPUT in shapes:
        out.append((OUTPUT, shapes[OUTPUT][1:]))
    return out


#: what ``layers()`` of a target without a known input shape says (the three model targets)
NEEDS_INPUT_SHAPE = ("listing the layers needs the per-sample input shape: give input_shape= (on the command line "
                     "--target-param input_shape=[1,16,16]), or call layers(input_shape=(1, 16, 16))")


def probe_input_shape(check: Callable[[torch.Tensor], None], shape: Sequence[int], model: nn.Module,
                      device: torch.device | str) -> None:
    """Run ``check`` on one zero image of the per-sample ``shape`` (``input_shape=``); an error of the model's
    forward pass on it (a shape the model does not take) becomes one :class:`ConfigError` naming the shape.

    Raises:
        ConfigError: as above, or what ``check`` raises itself (a bad layer or unit).
    """
    try:
        check(torch.zeros((1, *shape), device=device))
    except MangoError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ConfigError(f"input_shape {list(shape)} does not fit {type(model).__name__}: a zero image of that shape "
                          f"fails in its forward pass ({type(exc).__name__}: {first}); give the per-sample shape the "
                          "model takes, channels first (e.g. [1, 16, 16])") from None


def _index(v: Any) -> int | None:
    """``v`` as an int when it is an integer (Python, numpy, a 0-d integer tensor), else None (a bool, a float
    such as 2.5, a string such as ``"3"``)."""
    if isinstance(v, bool) or (hasattr(v, "dtype") and str(getattr(v, "dtype", "")).endswith("bool")):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


@dataclass(frozen=True)
class UnitSpec:
    """Which unit of a layer: ``unit`` (channel or neuron) and optional ``position``.

    ``position`` indexes the axes after the channel axis, e.g. ``(y, x)``.
    """

    unit: int = 0
    position: tuple[int, ...] | None = None

    @staticmethod
    def make(unit: int | Sequence[int], position: Sequence[int] | None = None) -> "UnitSpec":
        """Accept ``unit=c`` or ``unit=(c, y, x)`` (the latter is a channel at a position)."""
        if isinstance(unit, (list, tuple)):
            if not unit:
                raise ConfigError("unit must be an int or (channel, *position), got an empty sequence")
            if position is not None:
                raise ConfigError("give the position either in unit=(c, y, x) or in position=, not both")
            unit, position = unit[0], tuple(unit[1:]) or None
        u = _index(unit)
        if u is None:
            raise ConfigError(f"unit must be an integer channel/neuron index, got {unit!r}")
        if position is None:
            return UnitSpec(u, None)
        pos = None if isinstance(position, (str, bytes)) or not hasattr(position, "__iter__") else \
            [_index(p) for p in position]
        if pos is None or any(p is None for p in pos):
            raise ConfigError(f"position must be a list of integers (e.g. [y, x] of a channel's map), got {position!r}")
        return UnitSpec(u, tuple(pos))

    def describe(self) -> str:
        return f"{self.unit}" if self.position is None else f"{self.unit}@{self.position}"

    def check(self, shape: Sequence[int], layer: str) -> None:
        """Raise :class:`ConfigError` unless this unit exists in a per-sample shape ``shape``."""
        shape = tuple(shape)
        if len(shape) == 0:
            raise ConfigError(f"layer {layer!r} has a scalar output per sample; it has no units")
        n = shape[0]
        if not 0 <= self.unit < n:
            raise ConfigError(
                f"unit {self.unit} is out of range for layer {layer!r} with output shape {shape}; "
                f"valid units: 0..{n - 1}")
        if self.position is not None:
            rest = shape[1:]
            if len(self.position) != len(rest):
                raise ConfigError(
                    f"position {self.position} does not fit layer {layer!r} with output shape {shape}; "
                    f"give {len(rest)} coordinate(s)" + (f" within {rest}" if rest else " (none: omit position)"))
            for p, s in zip(self.position, rest):
                if not 0 <= p < s:
                    raise ConfigError(
                        f"position {self.position} is out of range for layer {layer!r} "
                        f"(spatial shape {rest}); valid: each coordinate in [0, size)")

    def select(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, C, *rest]`` layer output -> ``[B]`` value of this unit (mean over ``rest`` without a position)."""
        v = self.elements(out)
        return v[:, 0] if v.shape[1] == 1 else v.mean(dim=1)

    def elements(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, C, *rest]`` layer tensor -> this unit's elements ``[B, P]`` (``P`` = 1 for a neuron
        or a channel at a position, the map's size for a whole channel)."""
        v = out[:, self.unit]
        if self.position is not None:
            v = v[(slice(None), *self.position)]
        return v.reshape(v.shape[0], -1)
