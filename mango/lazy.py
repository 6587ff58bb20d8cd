"""Lazy package attributes: ``from pkg import Name`` imports the submodule defining it on first use.

Packages that must do no work at import time (``mango``, ``mango.generators``,
``mango.rig``) declare a table ``{attribute: module}`` and take the module-level
``__getattr__`` / ``__dir__`` (PEP 562) from :func:`lazy_attributes`::

    __getattr__, __dir__ = lazy_attributes(__name__, {"wrap": ".common"}, globals())
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: Mapping[str, str], namespace: Mapping[str, Any]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` resolving ``table`` (attribute -> module).

    Args:
        package: the package's ``__name__``.
        table: attribute name -> module that defines it, absolute (``"mango.spaces"``) or
            relative to ``package`` (``".common"``).
        namespace: the package's ``globals()`` (what ``dir()`` lists besides the table).

    Returns:
        ``__getattr__(name)``: imports and returns the attribute (cached in ``namespace``
        when it is the package's ``globals()``); an unknown name raises :class:`AttributeError`.
        ``__dir__()``: sorted names of the package and the table.
    """
    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(table[name], package), name)

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
