"""A fingerprint of the torch weights behind a generator or target, so a run knows which model it searched.

A run folder is resumed (or, when finished, returned as stored) only for the same run; without the
weights in its identity, a model retrained (or a checkpoint file replaced) between two calls into the
same folder would resume, or return, the old model's values as the new one's. The fingerprint is kept
in ``objective.info()`` (so in ``identity.json`` and ``result.json``)::

    weights_fingerprint(generator, target)   # 'blake2b:1f0c...' (16 bytes, hex), or None without modules

What is hashed: the parameters (names, dtypes, shapes and values) of every ``torch.nn.Module`` among
the objects and their direct attributes, and the persistent buffers of their submodules in eval mode
(a train-mode BatchNorm changes its buffers by being run). Hidden state kept in non-persistent buffers
(snnTorch's ``mem`` of an ``init_hidden`` neuron) is left out, so running a model does not change its
fingerprint; values are hashed on the CPU, so moving a model between devices does not either. Cost:
one pass over the weights (~0.3 s per 100 MB on the CPU here).
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
    when none of them holds a module (a plain function target, a remote rig).

    Hashed per submodule: its parameters (names, dtypes, shapes, values), and its persistent buffers
    only when it is in eval mode: a module left in train mode (a BatchNorm updating its running
    statistics at every forward pass) would otherwise change the fingerprint by being run, and refuse
    its own resume. None, too, when a parameter cannot be read yet (a lazy module not yet run).
    """
    h = hashlib.blake2b(digest_size=16)
    found = False
    for obj in objs:
        for module in modules_of(obj):
            found = True
            for mname, m in module.named_modules():
                tensors = list(m.named_parameters(prefix=mname, recurse=False))
                if not m.training:
                    skip = getattr(m, "_non_persistent_buffers_set", set())
                    tensors += [(f"{mname}.{n}" if mname else n, b) for n, b in m.named_buffers(recurse=False)
                                if n not in skip]
                for name, t in tensors:
                    if not _feed(h, name, t):
                        return None
    return f"blake2b:{h.hexdigest()}" if found else None


def _feed(h: Any, name: str, t: Any) -> bool:
    """Add one named tensor to the hash ``h``; False for one that cannot be read yet (a lazy module's
    parameter before its first forward pass): the weights cannot be fingerprinted, and a run records
    None (a folder recorded so is resumed without the check, see :mod:`mango.journal`)."""
    if isinstance(t, nn.parameter.UninitializedTensorMixin) or not isinstance(t, torch.Tensor):
        return False
    try:
        t = t.detach().to("cpu").contiguous()
    except (RuntimeError, ValueError):
        return False
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        try:
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):   # a layout without a byte view (sparse, quantized)
            h.update(repr(t.tolist()).encode())
    return True
