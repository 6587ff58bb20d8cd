"""MANGO: Maximization of neural Activation via Non-Gradient Optimization.

The one-liner: ``mango.maximize(model, "layer:unit", generator="vqvae-digits", budget=1000)``
(:mod:`mango.api`) for any torch or snnTorch model; objectives compose as values
(:mod:`mango.objectives`). The engine: search spaces (:mod:`mango.spaces`), the batched objective
(:mod:`mango.objective`), ask/tell optimizers (:mod:`mango.optimizers`), the loop
(:mod:`mango.loop`), the journal (:mod:`mango.journal`) and the command line
(:mod:`mango.cli`). Concrete generators and targets live in
``mango.generators`` / ``mango.targets`` and are found through :mod:`mango.registry`.

Importing ``mango`` does no work: submodules are imported on first attribute access.
"""
from __future__ import annotations

import importlib
from typing import Any

from .lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "CodebookSpace": "mango.spaces",
    "GridSpace": "mango.spaces",
    "LatentSpace": "mango.spaces",
    "QTTView": "mango.spaces",
    "Objective": "mango.objective",
    "maximize": "mango.api",
    "maximize_model": "mango.api",
    "Visualization": "mango.api",
    "Result": "mango.loop",
    "make_optimizer": "mango.optimizers",
    "register": "mango.registry",
}


#: submodules reachable as attributes (``mango.objectives.parse``, ``mango.registry.create``) without an explicit import
_SUBMODULES = ("objectives", "registry")


_lazy_getattr, _lazy_dir = lazy_attributes(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(_lazy_dir()) | set(_SUBMODULES))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mango.{name}")
    return _lazy_getattr(name)


__all__ = ["__version__", *_LAZY]
