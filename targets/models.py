"""Bringing a user's model in: load it (module, file or Python factory) and tell spiking from not.

A model is given as

* an ``nn.Module`` (Python);
* a path to a full pickled eager module (``torch.save(model, path)``), only with the
  explicit opt-in ``trust_pickle=True`` (``--target-param trust_pickle=true``): unpickling
  a file runs whatever code the file names, so a file from someone else can take over the
  machine. Without the opt-in such a file is refused before anything in it runs (it is
  opened with ``torch.load(weights_only=True)``, which only builds tensors and plain
  containers), with a message saying how to pass the model safely: a Python factory;
* a Python factory ``"package.module:function"`` (or ``"path/to/file.py:function"``):
  the function is imported and called with no arguments and must return the module.
  This is how the command line takes a network that cannot be pickled, such as an
  snnTorch net whose neurons hold a ``snntorch.surrogate`` function.

A model is *spiking* when it contains snnTorch neurons (``snntorch``'s
``SpikingNeuron`` subclasses: ``Leaky``, ``Synaptic``, ...).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import torch
from torch import nn

from mango.errors import ConfigError

__all__ = ["load_model", "spiking_neuron_names", "is_spiking", "SCRIPT_HINT", "FACTORY_RE"]

#: what to do instead of passing TorchScript (ScriptModules refuse forward hooks)
SCRIPT_HINT = ("TorchScript modules do not support the forward hooks a unit is read through. "
               "Use the eager (Python) module instead: save it with torch.save(model, path) and pass "
               "that file, or build the architecture in Python, load its state_dict and pass the module "
               "(on the command line: a factory 'package.module:function' returning it)")

#: ``package.module:function`` or ``path/to/file.py:function``
FACTORY_RE = re.compile(r"^(?P<mod>[\w.]+|.+\.py):(?P<fn>[A-Za-z_]\w*)$")


def spiking_neuron_names(model: nn.Module) -> list[str]:
    """Dotted names of the snnTorch neurons in ``model`` (the model itself as ``""``), in order."""
    try:
        from snntorch._neurons.neurons import SpikingNeuron
    except ImportError:  # pragma: no cover - snntorch missing
        return []
    return [n for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


def is_spiking(model: nn.Module) -> bool:
    """Whether ``model`` contains snnTorch neurons."""
    return bool(spiking_neuron_names(model))


def _from_factory(spec: str) -> object:
    m = FACTORY_RE.match(spec)
    assert m is not None
    mod, fn = m.group("mod"), m.group("fn")
    try:
        if mod.endswith(".py"):
            path = Path(mod)
            if not path.is_file():
                raise ConfigError(f"model factory file {mod!r} not found (in {spec!r})")
            name = f"mango_user_model_{abs(hash(str(path.resolve())))}"
            s = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(s)  # type: ignore[arg-type]
            sys.modules[name] = module
            s.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if str(Path.cwd()) not in sys.path and "" not in sys.path:
                sys.path.insert(0, str(Path.cwd()))       # `mango run` from a project folder finds its modules
            module = importlib.import_module(mod)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot import the model factory module {mod!r} (from {spec!r}): "
                          f"{type(e).__name__}: {e}") from e
    factory = getattr(module, fn, None)
    if not callable(factory):
        valid = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"{mod!r} has no callable {fn!r}; callables there: {', '.join(valid[:20]) or '(none)'}")
    try:
        return factory()
    except Exception as e:
        raise ConfigError(f"model factory {spec!r} failed: {type(e).__name__}: {e}") from e


#: how to pass a model without unpickling a file
SAFE_HINT = ("pass a Python factory instead, '--target-param model=package.module:function' (or "
             "'path/to/file.py:function') that builds the module and loads its state_dict with "
             "torch.load(..., weights_only=True); or, only for a file you made or trust, opt in with "
             "trust_pickle=true (loading runs code named in the file)")


def _load_file(spec: str, device: str | torch.device | None, trust_pickle: bool) -> object:
    """A non-TorchScript file: tensors and plain containers only, unless ``trust_pickle``."""
    if trust_pickle:
        try:
            return torch.load(spec, map_location=device, weights_only=False)
        except Exception as e:
            raise ConfigError(f"cannot load a torch module from {spec!r}: {e}") from e
    try:
        return torch.load(spec, map_location=device, weights_only=True)
    except Exception as e:  # a pickled module (or anything with code in it) is refused here, unrun
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unpickling" in type(e).__name__:
            raise ConfigError(f"{spec!r} is a pickled Python object (e.g. torch.save(model, path)); "
                              f"loading it would run code from the file, so it is refused; {SAFE_HINT}") from None
        raise ConfigError(f"cannot load a torch module from {spec!r}: {type(e).__name__}: {e}") from None


def _functions_hint(path: Path) -> str:
    """``" (functions defined there: a, b)"`` from the file's syntax tree (nothing in it runs), or ``""``."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return f" (functions defined there: {', '.join(names[:10])})" if names else ""


def _registered_hint(spec: str) -> str:
    """For a registered target's name given as a model: where that target's torch module is."""
    from mango import registry

    if spec not in registry.names("target"):
        return ""
    return (f"; {spec!r} is a registered target: its torch module is "
            f"mango.registry.create('target', {spec!r}).model (.net for a spiking target), or run it by name "
            f"with `mango run --target {spec}`")


def load_model(model: nn.Module | str, device: str | torch.device | None = None,
               trust_pickle: bool = False) -> nn.Module:
    """The ``nn.Module`` that ``model`` names (see the module docstring), on ``device`` (None: where it is).

    ``trust_pickle``: allow a full pickled module file (code in the file runs while it loads;
    only for files you made or trust). Default False: such a file is refused unopened by pickle.

    Raises:
        ConfigError: a missing file, a TorchScript file, a factory that cannot be imported or does
            not return a module, or a file holding something else (e.g. a state_dict); the message
            names the value and what to pass instead.
    """
    if isinstance(model, (str, Path)):
        spec = str(model)
        p = Path(spec)
        if p.is_file() and p.suffix == ".py":
            raise ConfigError(f"{spec!r} is a Python file: name the function in it that builds the model, "
                              f"'{spec}:FUNCTION'{_functions_hint(p)}")
        if p.is_file():
            try:
                m = torch.jit.load(str(p), map_location=device)
            except Exception:
                m = _load_file(spec, device, bool(trust_pickle))
            else:
                raise ConfigError(f"{spec!r} is a TorchScript file; {SCRIPT_HINT}")
            what = f"{spec!r} holds"
        elif FACTORY_RE.match(spec):
            m = _from_factory(spec)
            what = f"model factory {spec!r} returned"
        else:
            raise ConfigError(f"model {spec!r} is neither a file nor a factory 'package.module:function'"
                              + _registered_hint(spec))
        if not isinstance(m, nn.Module):
            raise ConfigError(f"{what} a {type(m).__name__}, not a torch module "
                              "(a state_dict needs its architecture: build the module in a factory function)")
        model = m
    if not isinstance(model, nn.Module):
        inner = [n for n in ("model", "net") if isinstance(getattr(model, n, None), nn.Module)]
        hint = f" (this one holds its module as .{inner[0]})" if inner else ""
        raise ConfigError(f"model must be a torch.nn.Module, a file path or 'package.module:function', "
                          f"got {type(model).__name__}{hint}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(f"{type(model).__name__} is a TorchScript module; {SCRIPT_HINT}")
    return model if device is None else model.to(device)
