"""One entry for any torch or snnTorch model: the registered target ``model``.

:func:`model_target` loads the model (module, file or ``package.module:function``
factory, :func:`~mango.targets.models.load_model`), detects snnTorch neurons and
returns

* a :class:`~mango.targets.snn_net.SpikingNetTarget` for a spiking net (reset per
  stimulus, firing rates over ``T`` steps; step modules and nets that loop over
  time in ``forward``);
* an :class:`~mango.targets.torch_unit.ObjectiveTarget` for any other module
  (hooks; channel means, positions, class logits / probabilities).

The engine reaches it by name through :mod:`mango.registry` (this is what
:func:`mango.maximize` uses), so ``mango/`` never imports ``mango.targets``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mango.errors import ConfigError
from mango.objectives import ObjectiveExpr

from .models import is_spiking, load_model
from .snn_net import SpikingNetTarget
from .torch_unit import ObjectiveTarget

__all__ = ["model_target", "SPIKING_ONLY"]

#: parameters that only a spiking net takes, with their defaults
SPIKING_ONLY = {"T": None, "encoding": "static", "seed": 0, "fast": True, "backend": "torch", "readout": "graded"}


def model_target(model: nn.Module | str, objective: str | ObjectiveExpr, T: int | None = None,
                 encoding: str = "static", seed: int | None = 0, fast: bool = True, backend: str = "torch",
                 input_shape: Sequence[int] | None = None, device: str | None = None, trust_pickle: bool = False,
                 readout: str = "graded") -> SpikingNetTarget | ObjectiveTarget:
    """Any torch or snnTorch model's ``objective`` (``"layer:unit"``, sums, see :mod:`mango.objectives`).

    Spiking nets (found by their snnTorch neurons) take ``T`` (default 32 for a step module,
    the net's own for a net looping over time), ``encoding`` (``static``/``poisson``), ``seed``
    (Poisson), ``fast`` and ``backend`` (fast path), ``readout`` (``"graded"``, the default for a
    one-unit objective, or ``"rate"``: see :mod:`mango.targets.snn_net`); a non-spiking model given one of these
    is refused. ``device``: move the model there (None: leave it where it is).
    """
    net = load_model(model, device, trust_pickle)
    if is_spiking(net):
        return SpikingNetTarget(net, objective, T=T, encoding=encoding, seed=seed, fast=fast, backend=backend,
                                input_shape=input_shape, readout=readout)
    given = {"T": T, "encoding": encoding, "seed": seed, "fast": fast, "backend": backend, "readout": readout}
    bad = [k for k, v in given.items() if v != SPIKING_ONLY[k]]
    if bad:
        raise ConfigError(f"{type(net).__name__} has no snnTorch neurons, so the spiking parameter(s) "
                          f"{', '.join(bad)} do not apply; leave them out")
    return ObjectiveTarget(net, objective, input_shape=input_shape)
