"""A fingerprint of the torch weights behind a generator or target, so a run knows which model it searched.

A run folder is resumed (or, when finished, returned as stored) only for the same run; without the
weights in its identity, a model retrained (or a checkpoint file replaced) between two calls into the
same folder would resume, or return, the old model's values as the new one's. The fingerprint is kept
in ``objective.info()`` (so in ``identity.json`` and ``result.json``)::

    weights_fingerprint(generator, target)   # 'blake2b:1f0c...' (16 bytes, hex), or None without modules

What is hashed: the ``state_dict()`` (names, dtypes, shapes and values of parameters and persistent
buffers) of every ``torch.nn.Module`` among the objects and their direct attributes. Hidden state kept
in non-persistent buffers (snnTorch's ``mem`` of an ``init_hidden`` neuron) is not part of a state
dict, so running a model does not change its fingerprint; values are hashed on the CPU, so moving a
model between devices does not either. Cost: one pass over the weights (~1 GB/s).
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

__all__ = ["weights_fingerprint", "modules_of"]


def modules_of(obj: Any) -> list[nn.Module]:
    """The ``nn.Module`` instances that make up ``obj``: itself if it is one, else its direct attributes that are."""
    if isinstance(obj, nn.Module):
        return [obj]
    try:
        attrs = vars(obj)
    except TypeError:       # no __dict__ (a builtin, a slotted object)
        return []
    return [v for _, v in sorted(attrs.items()) if isinstance(v, nn.Module)]


def weights_fingerprint(*objs: Any) -> str | None:
    """``"blake2b:<32 hex digits>"`` of the weights of the modules making up ``objs`` (in order), or None
    when none of them holds a module (a plain function target, a remote rig)."""
    h = hashlib.blake2b(digest_size=16)
    found = False
    for obj in objs:
        for module in modules_of(obj):
            found = True
            for name, t in module.state_dict().items():
                if not isinstance(t, torch.Tensor):
                    h.update(f"{name}={t!r};".encode())
                    continue
                t = t.detach().to("cpu").contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                if t.numel():
                    try:
                        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
                    except (RuntimeError, TypeError):   # a layout without a byte view (sparse, quantized)
                        h.update(repr(t.tolist()).encode())
    return f"blake2b:{h.hexdigest()}" if found else None
