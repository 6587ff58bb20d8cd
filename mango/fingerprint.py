"""A fingerprint of the torch weights behind a generator or target, so a run knows which model it searched.

A run folder is resumed (or, when finished, returned as stored) only for the same run; without the
weights in its identity, a model retrained (or a checkpoint file replaced) between two calls into the
same folder would resume, or return, the old model's values as the new one's. The fingerprint is kept
in ``objective.info()`` (so in ``identity.json`` and ``result.json``)::

    weights_fingerprint(generator, target)   # 'blake2b:1f0c...' (16 bytes, hex), or None without modules

What is hashed: the parameters (names, dtypes, shapes and values) of every ``torch.nn.Module`` among
the objects and their direct attributes, and the persistent buffers of their submodules (a BatchNorm's
running statistics; MANGO runs modules in eval mode, so a search does not move them). Hidden state kept
in non-persistent buffers (snnTorch's ``mem`` of an ``init_hidden`` neuron) is left out, so running a
model does not change its fingerprint; values are hashed on the CPU, so moving a model between devices does not either. Cost:
one pass over the weights (~0.3 s per 100 MB on the CPU here).

Two more marks, so that a folder is not resumed for a different computation with the same weights:

    structure_fingerprint(generator, target)   # the modules' structure: their repr (layer types, sizes,
                                               # activations), memory addresses left out
    transform_fingerprint(transform)           # what a transform computes, as far as it can be read

A function is identified by its qualified name, its code (bytecode, constants and names, nested code
included), its defaults and the values it closes over: numbers, strings, tuples, tensors and arrays by
value, anything else (a list used as a counter, an object) and any variable the function assigns itself
(``nonlocal n; n += 1``) by its type only, so a transform's own state does not change its mark. The code
is Python's bytecode: a resume under another Python version sees another transform. A bound method adds
its object's type and weights; an ``nn.Module`` is marked by its structure and weights; any other callable
by its type and its repr without memory addresses. A changed *global* a function reads, or a change inside
a module's ``forward`` that its repr does not show, is not seen.
"""
from __future__ import annotations

import hashlib
import re
import types
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["weights_fingerprint", "modules_of", "structure_fingerprint", "transform_fingerprint"]


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

    Hashed per submodule: its parameters (names, dtypes, shapes, values) and its persistent buffers (a
    BatchNorm's running statistics decide its eval-mode output), whatever its train/eval mode: MANGO runs
    models and generators in eval mode (:func:`mango.modes.eval_mode`), so running them does not move
    those statistics. None, too, when a parameter cannot be read yet (a lazy module not yet run).
    """
    h = hashlib.blake2b(digest_size=16)
    found = False
    for obj in objs:
        for module in modules_of(obj):
            found = True
            for mname, m in module.named_modules():
                tensors = list(m.named_parameters(prefix=mname, recurse=False))
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


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _without_addresses(text: str) -> str:
    return _ADDRESS.sub("", text)


def structure_fingerprint(*objs: Any) -> str | None:
    """``"blake2b:<32 hex digits>"`` of the structure (``repr``, memory addresses left out) of the modules
    making up ``objs``, or None when none holds a module. Two models with the same weights but another
    activation, pooling or layer order differ here."""
    h = hashlib.blake2b(digest_size=16)
    found = False
    for obj in objs:
        for module in modules_of(obj):
            found = True
            h.update(f"{type(module).__module__}.{type(module).__qualname__}\n".encode())
            h.update(_without_addresses(repr(module)).encode())
    return f"blake2b:{h.hexdigest()}" if found else None


def _feed_value(h: Any, v: Any, depth: int = 0) -> None:
    """Add a value a function closes over (or a default) to ``h``: plain values by value, the rest by type."""
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(v).__name__}:{v!r};".encode())
    elif isinstance(v, tuple) and depth < 4:
        h.update(b"(")
        for x in v:
            _feed_value(h, x, depth + 1)
        h.update(b")")
    elif isinstance(v, torch.Tensor):
        if not _feed(h, "tensor", v):
            h.update(b"tensor:unreadable;")
    elif isinstance(v, (np.ndarray, np.generic)):
        a = np.ascontiguousarray(v)
        h.update(f"ndarray:{a.dtype}:{a.shape};".encode() + (a.tobytes() if a.dtype != object else b""))
    elif isinstance(v, types.CodeType):
        _feed_code(h, v, depth + 1)
    elif isinstance(v, types.FunctionType) and depth < 4:
        _feed_function(h, v, depth + 1)
    else:
        h.update(f"type:{type(v).__module__}.{type(v).__qualname__};".encode())


def _feed_code(h: Any, code: types.CodeType, depth: int = 0) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        _feed_value(h, c, depth)


def _stored_free(code: types.CodeType) -> set[str]:
    """Names a function (or a function nested in it) assigns with ``nonlocal``: its own state (a counter)."""
    import dis

    out = {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_DEREF"}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _stored_free(c)
    return out


def _feed_function(h: Any, fn: types.FunctionType, depth: int = 0) -> None:
    h.update(f"function:{fn.__module__}.{fn.__qualname__};".encode())
    _feed_code(h, fn.__code__, depth)
    for v in (fn.__defaults__ or ()):
        _feed_value(h, v, depth)
    for k, v in sorted((fn.__kwdefaults__ or {}).items()):
        h.update(k.encode())
        _feed_value(h, v, depth)
    state = _stored_free(fn.__code__)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            v = cell.cell_contents
        except ValueError:              # an empty cell
            h.update(b"cell:empty;")
            continue
        if name in state:               # written by the function itself (nonlocal): its state, by type only
            h.update(f"state:{type(v).__module__}.{type(v).__qualname__};".encode())
        else:
            _feed_value(h, v, depth)


def transform_fingerprint(fn: Any) -> str | None:
    """``"blake2b:<32 hex digits>"`` of what the callable ``fn`` computes, as far as it can be read (see the
    module docstring), or None for ``fn=None``."""
    if fn is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    if isinstance(fn, nn.Module):
        h.update(f"module:{structure_fingerprint(fn)}:{weights_fingerprint(fn)}".encode())
    elif isinstance(fn, types.FunctionType):
        _feed_function(h, fn)
    elif isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        owner = fn.__self__
        h.update(f"method of {type(owner).__module__}.{type(owner).__qualname__};".encode())
        h.update(f"{structure_fingerprint(owner)}:{weights_fingerprint(owner)};".encode())
        _feed_function(h, fn.__func__)
    else:
        h.update(f"callable:{type(fn).__module__}.{type(fn).__qualname__};".encode())
        h.update(_without_addresses(repr(fn)).encode())
        h.update(f"{structure_fingerprint(fn)}:{weights_fingerprint(fn)};".encode())
    return f"blake2b:{h.hexdigest()}"
