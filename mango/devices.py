"""Which torch device a model lives on (one rule for generators, targets and the objective)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["module_device"]


def module_device(obj: Any, default: torch.device | str | None = "cpu") -> torch.device | None:
    """The device of ``obj``'s first parameter, else its first buffer, else ``default``.

    ``obj`` may be any object: an ``nn.Module`` is inspected; anything else (a plain
    function target) has no device and gives ``default`` (``None`` to tell "unknown"
    apart from "cpu").
    """
    if isinstance(obj, torch.nn.Module):
        for p in obj.parameters():
            return p.device
        for b in obj.buffers():
            return b.device
    return None if default is None else torch.device(default)
