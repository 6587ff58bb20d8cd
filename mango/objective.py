"""The batched objective: index batch ``I [k, d]`` -> activations ``y [k]``.

:class:`Objective` composes a generator and a target (plain callables meeting
:mod:`mango.protocols`) and evaluates on one torch device in micro-batches::

    I [k, d] --space.decode--> z --generator--> x [k, C, H, W] --target--> a [k] or [k, ch]
                                                                    --select--> y [k]

Every micro-batch a deterministic target sees has exactly ``batch_size`` rows (the last one
is padded with copies of its last code and the padding's outputs are dropped), so the same
kernels run for every call and a code's value does not depend on the batch it came in: float32
rounding in matrix products varies with the batch's shape (on CPU, odd and even row counts take
different kernels), and near a spiking threshold that can move a firing rate by one spike. Noisy
targets (rigs) are never padded: every row is a real presentation.

It counts the queries it answers, caches exact repeats for deterministic targets and checks
what comes back: a wrong shape, NaN or inf raises :class:`EvaluationError` naming
the query, and nothing counted or cached before is lost (the failing batch is
simply not recorded).

:class:`FunctionObjective` wraps a plain function of indices (benchmark problems
with known maxima, analytic black boxes).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .channels import make_select
from .devices import full_float32, module_device
from .errors import ConfigError, EvaluationError, MangoError
from .fingerprint import structure_fingerprint, transform_fingerprint, weights_fingerprint
from .modes import eval_mode
from .protocols import flag
from .spaces import LatentSpace

__all__ = ["Objective", "FunctionObjective", "make_select", "BaseObjective"]

Select = Callable[[torch.Tensor], torch.Tensor]


class BaseObjective:
    """Shared bookkeeping: query counts, cache, validation, timing.

    The run's budget is counted by the loop (:func:`mango.loop.run_loop`), not
    here: these counters describe this objective only (it may serve several runs).

    Attributes:
        space: the latent space indices live in.
        n_queries: queries this objective answered (cache hits and values put back
            by :meth:`restore` included).
        n_evaluated: queries actually computed.
        eval_seconds: wall time spent inside evaluation.
    """

    def __init__(self, space: LatentSpace, cache: bool = True) -> None:
        self.space = space
        self.cache_enabled = bool(cache)
        self._cache: dict[bytes, float] = {}
        self.n_queries = 0
        self.n_evaluated = 0
        self.eval_seconds = 0.0

    # subclasses implement this: validated int64 [m, d] -> float64 [m]
    def _evaluate(self, I: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, I: Any) -> np.ndarray:
        """Evaluate an index batch ``[k, d]`` and return ``float64 [k]``."""
        I = self.space.validate(I)
        k = I.shape[0]
        y = np.empty(k, dtype=np.float64)
        if self.cache_enabled:
            keys = [row.tobytes() for row in I]
            todo: dict[bytes, list[int]] = {}
            for i, key in enumerate(keys):
                if key in self._cache:
                    y[i] = self._cache[key]
                else:
                    todo.setdefault(key, []).append(i)
            first = [rows[0] for rows in todo.values()]
        else:
            first = list(range(k))
        if first:
            t0 = time.perf_counter()
            vals = self._checked(I[first], np.asarray(first))
            self.eval_seconds += time.perf_counter() - t0
            self.n_evaluated += len(first)
            if self.cache_enabled:
                for (key, rows), v in zip(todo.items(), vals):
                    y[rows] = v
                    self._cache[key] = float(v)
            else:
                y[first] = vals
        self.n_queries += k
        return y

    def _checked(self, I: np.ndarray, rows: np.ndarray) -> np.ndarray:
        vals = self._evaluate(I)
        vals = np.asarray(vals, dtype=np.float64)
        if vals.shape != (I.shape[0],):
            raise EvaluationError(
                f"objective returned shape {vals.shape} for a batch of {I.shape[0]} queries; "
                f"expected ({I.shape[0]},) (use select= to pick one channel of a multi-channel target)"
            )
        bad = ~np.isfinite(vals)
        if bad.any():
            j = int(np.argmax(bad))
            raise EvaluationError(
                f"objective returned {vals[j]} for query {int(rows[j])} of the batch "
                f"(code {I[j].tolist()[:16]}{'...' if I.shape[1] > 16 else ''}); "
                "nothing of this batch was recorded"
            )
        return vals

    def restore(self, I: Any, y: Any) -> None:
        """Put journaled values back (resume): codes ``I [k, d]`` had values ``y [k]``.

        Counts them as answered queries and, when caching, caches them, so a
        resumed run continues exactly as the uninterrupted one; nothing is evaluated.
        """
        I = self.space.validate(I)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if I.shape[0] != y.shape[0]:
            raise ConfigError(f"restore got {I.shape[0]} codes but {y.shape[0]} values")
        if self.cache_enabled:
            for row, v in zip(I, y):
                self._cache[row.tobytes()] = float(v)
        self.n_queries += len(y)

    @property
    def reported_name(self) -> str:
        """Name of the quantity :meth:`reported` returns (``"value"``: the search score itself)."""
        return "value"

    def reported(self, values: Any) -> np.ndarray:
        """The quantity the user asked for, from search scores ``values float64 [k]`` -> ``float64 [k]``.

        Identity here; :class:`Objective` delegates to its target's ``reported``.
        """
        return np.asarray(values, dtype=np.float64)

    @property
    def noisy(self) -> bool:
        return False

    def info(self) -> dict[str, Any]:
        """JSON-able description for ``result.json``."""
        return {"space": self.space.to_dict(), "cache": self.cache_enabled}


class Objective(BaseObjective):
    """Generator + target evaluated in micro-batches on one device.

    Args:
        generator: has ``space`` and maps ``space.decode(I)`` to images ``[k, C, H, W]``.
        target: images -> ``[k]`` (or ``[k, ch]`` with ``select``).
        device: torch device for decoding and evaluation (default: the first
            parameter's device of the generator if it is a module, else CPU).
        batch_size: micro-batch width (>= 1): every forward pass of a deterministic target has
            exactly this many rows (see the module docstring), so it fixes the values; bound it
            by memory. Default :func:`default_eval_batch_size` of the device (10 on CPU, 64 on
            accelerators).
        cache: cache exact repeats; default on for targets that are not ``noisy``.
        select: channel selection for multi-channel targets (see :func:`make_select`).
        transform: optional function applied to images before the target
            (e.g. a resize or normalisation adapter between generator and target).
    """

    def __init__(self, generator: Any, target: Any, *, device: torch.device | str | None = None,
                 batch_size: int | None = None, cache: bool | None = None,
                 select: int | Sequence[int] | str | Callable | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        space = getattr(generator, "space", None)
        if not isinstance(space, LatentSpace):
            raise ConfigError(f"generator {_describe(generator)} has no LatentSpace 'space' attribute: make a torch "
                              "module a generator with mango.generators.wrap(module, space), e.g. "
                              "wrap(my_gan, GridSpace(d=128, n=16)) for a 128-d latent on 16 levels "
                              "(mango.spaces: GridSpace, CodebookSpace)")
        if batch_size is not None:
            check_eval_batch_size(batch_size, "batch_size (images per forward pass)")
        noisy = flag(target, "noisy")
        super().__init__(space, cache=(not noisy) if cache is None else cache)
        self.generator = generator
        self.target = target
        self.select = None if select is None else make_select(select)
        self.transform = transform
        if device is None:
            device = module_device(generator, None) or module_device(target, None) or "cpu"
        self.device = torch.device(device)
        self.batch_size = default_eval_batch_size(self.device) if batch_size is None else int(batch_size)
        self._noisy = noisy
        self._fits = False      # set once the target has taken a batch of the generator's images
        self._decodes = False   # set once the generator has decoded a batch

    @property
    def noisy(self) -> bool:
        return self._noisy

    @property
    def reported_name(self) -> str:
        """The target's ``reported_name`` (e.g. ``"rate"``), or ``"value"`` when it has none."""
        return str(getattr(self.target, "reported_name", None) or "value") if self._reported() else "value"

    def reported(self, values: Any) -> np.ndarray:
        """The target's ``reported(values)`` (e.g. the firing rate from a graded spiking score), or the
        scores themselves; ``float64 [k]`` -> ``float64 [k]``."""
        y = np.asarray(values, dtype=np.float64)
        fn = self._reported()
        if fn is None:
            return y
        try:
            out = np.asarray(fn(y), dtype=np.float64)
        except ConfigError:
            if self._fits:
                raise
            # a resumed run replays its journal before any image reached the target in this process; a target
            # whose mapping is learnt from its first forward pass (a spiking net's positions per unit) gets one
            # image now: not a query, not counted
            with torch.no_grad(), full_float32(self.device):
                self.activations(self.decode(self.space.validate(np.zeros((1, self.space.d), dtype=np.int64))))
            out = np.asarray(fn(y), dtype=np.float64)
        if out.shape != y.shape:
            raise EvaluationError(f"target {_describe(self.target)}.reported returned shape {out.shape} for "
                                  f"{y.shape} values; it must map each value to one number")
        return out

    def _reported(self) -> Callable[[np.ndarray], Any] | None:
        fn = getattr(self.target, "reported", None)
        return fn if callable(fn) else None

    @property
    def differentiable(self) -> bool:
        """Whether gradients flow from latent to activation."""
        return flag(self.generator, "differentiable") and flag(self.target, "differentiable")

    def images(self, I: Any) -> torch.Tensor:
        """Decode indices to images ``[k, C, H, W]`` (micro-batched, no grad)."""
        I = self.space.validate(I)
        outs = []
        with torch.no_grad(), full_float32(self.device):
            for s in range(0, I.shape[0], self.batch_size):
                outs.append(self.decode(I[s:s + self.batch_size]))
        return torch.cat(outs)

    def decode(self, I: np.ndarray) -> torch.Tensor:
        """The generator's images ``[k, C, H, W]`` of validated codes ``I [k, d]``; a generator that is an
        ``nn.Module`` runs in eval mode, each of its submodules getting its own mode back after the call
        (:func:`mango.modes.eval_mode`; modules a plain function or object merely holds are not reached).

        Raises:
            ConfigError: the first batch fails in the generator with an error that is not one of MANGO's own
                (a space that does not fit the module, a module of another dtype; not out of memory), or the
                generator returns something other than an image tensor; named with the generator and its space.
            EvaluationError: the images hold NaN or infinity (named with the code; a resume would ask the
                same code again).
        """
        try:
            with eval_mode(self.generator):
                x = self.generator(self.space.decode(I, self.device))
        except MangoError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:   # what torch raises on a misfit
            if self._decodes or "out of memory" in str(exc).lower():     # not a misfit: as it is
                raise
            raise ConfigError(
                f"generator {_describe(self.generator)} failed on codes of its {self.space.kind} space (d={self.space.d} "
                f"values in 0..{self.space.n - 1}, decoded to latents of shape {list(self.space.shape)}): "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; the module "
                "must map space.decode(I) to images [k, C, H, W]: check that the space's size (and, for a codebook, "
                "its number of entries) fits the module") from exc
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] != I.shape[0]:
            got = f"a tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
            raise ConfigError(f"generator {_describe(self.generator)} returned {got} for {I.shape[0]} codes; it must "
                              "return the images as one torch tensor [k, C, H, W]")
        self._decodes = True
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):   # integer images (uint8) have no NaN
            bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0, 0])
            code = I[bad].tolist()
            raise EvaluationError(
                f"generator {_describe(self.generator)} returned NaN or infinite pixels for code {code[:16]}"
                f"{'...' if len(code) > 16 else ''}; nothing of this batch was recorded, and a resume asks the "
                "same code again: fix the generator, or start another run folder or seed")
        return x

    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """Target activations (selected) of an image batch, ``[k]`` float.

        Raises:
            ConfigError: the first batch the target is given fails in the target (or in ``transform``)
                with an error that is not one of MANGO's own, e.g. a CNN whose first layer wants another
                number of colour channels than the generator gives: the message names the generator's
                image shape and keeps the model's own message. Later failures pass unchanged.
        """
        try:
            out = self.target(self._transformed(images))
        except MangoError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:   # what torch raises on a misfit
            if self._fits:
                raise
            via = "; the target got them through transform" if self.transform else ""
            raise ConfigError(
                f"target {_describe(self.target)} failed on the images of generator {_describe(self.generator)} "
                f"(shape {list(images.shape)}, range [{float(images.min()):.3g}, {float(images.max()):.3g}]{via}): "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; the target "
                f"must take the generator's images: pick a generator made for it (`mango generators`) "
                f"or pass a transform that resizes them"
            ) from exc
        self._fits = True
        a = _numeric(out, self.target)
        if self.select is not None:
            if a.ndim != 2:
                raise EvaluationError(f"select= needs a [k, channels] target output, got shape {tuple(a.shape)}")
            a = self.select(a)
        return a

    def approach(self, I: Any, images: torch.Tensor | None = None) -> list[dict[str, Any]] | None:
        """How close each code's image brought the unit to firing (the target's ``approach``, e.g.
        :meth:`mango.targets.spiking.SpikingTarget.approach`: spikes and the membrane's late peak against
        threshold, and where), one dict per code; None when the target cannot tell (a model objective, a
        recording rig). Not a query: it is not counted in any budget or history. ``images``: the codes'
        images ``[k, C, H, W]`` when the caller has decoded them already."""
        fn = getattr(self.target, "approach", None)
        if not callable(fn):
            return None
        x = self.images(I) if images is None else images
        with torch.no_grad(), full_float32(self.device):     # as the codes were scored
            return fn(self._transformed(x))

    def _transformed(self, images: torch.Tensor) -> torch.Tensor:
        """``transform(images)``, checked to be an image batch of the same length (or ``images`` without one).

        Raises:
            EvaluationError: the transform returned something else (e.g. None from a function that
                changed its argument in place and forgot to return it), named with its type or shape.
        """
        if self.transform is None:
            return images
        out = self.transform(images)
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != images.shape[0]:
            got = f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise EvaluationError(f"transform returned {got} for images of shape {list(images.shape)}; it must "
                                  "return the image batch as a tensor with the same first dimension [k, ...]")
        return out

    def _evaluate(self, I: np.ndarray) -> np.ndarray:
        out = []
        width = self.batch_size
        with torch.no_grad(), full_float32(self.device):     # a code's value must not depend on the device's TF32
            for s in range(0, I.shape[0], width):
                chunk = I[s:s + width]
                n = chunk.shape[0]
                if n < width and not self._noisy:    # same shape every call: values do not depend on the batch
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], width - n, axis=0)])
                x = self.decode(chunk)
                a = self.activations(x)
                if a.shape != (chunk.shape[0],):
                    raise EvaluationError(
                        f"target returned shape {tuple(a.shape)} for {chunk.shape[0]} images; expected "
                        f"({chunk.shape[0]},) (use select= to pick channels of a multi-channel target)"
                    )
                out.append(a[:n].detach().double().cpu().numpy())
        return np.concatenate(out)

    def info(self) -> dict[str, Any]:
        """JSON-able description: space, cache, generator, target, ``weights`` and ``structure`` (fingerprints
        of the generator's and target's torch weights and module structure, :mod:`mango.fingerprint`, taken
        at the first call, or None without modules), ``transform`` (a fingerprint of the transform's code,
        only when there is one), device, micro-batch width, noisy."""
        out = super().info()
        if not hasattr(self, "_weights"):   # once per objective: hashing a large model takes ~0.3 s per 100 MB
            self._weights = weights_fingerprint(self.generator, self.target)
            # None with the weights: a lazy module not yet run shows another repr once it has run
            self._structure = (structure_fingerprint(self.generator, self.target)
                               if self._weights is not None else None)
            self._transform_mark = None if self.transform is None else transform_fingerprint(self.transform)
        out.update(generator=_describe(self.generator), target=_describe(self.target), weights=self._weights,
                   structure=self._structure, device=str(self.device), batch_size=self.batch_size,
                   noisy=self.noisy)
        if self.transform is not None:
            out["transform"] = self._transform_mark
        return out


#: the widest forward pass an objective takes: a short batch is padded to the full width (so that the
#: values do not depend on the batch), and 10**9 rows asked numpy for 119 GiB before any error
MAX_EVAL_BATCH = 65536


def check_eval_batch_size(value: Any, name: str = "eval_batch_size") -> int:
    """``value`` as an objective's forward-pass width, an int in ``1..MAX_EVAL_BATCH``.

    Raises:
        ConfigError: anything else, named as ``name`` (the caller's word for it).
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EVAL_BATCH:
        raise ConfigError(f"{name} must be an integer in 1..{MAX_EVAL_BATCH}, got {value!r}")
    return value


def default_eval_batch_size(device: torch.device | str) -> int:
    """Micro-batch width used when none is given: 10 on CPU, 64 on accelerators.

    On CPU the paper pipeline's cost per image is flat from 1 to 100 rows per pass
    (~17 ms per image on 2 cores), so a narrow width wastes little when a short batch is
    padded (gradient AM scores one code at a time); accelerators want wide passes.
    """
    return 10 if torch.device(device).type == "cpu" else 64


def _numeric(a: Any, source: Any) -> torch.Tensor:
    """A target's (or function's) output as a numeric tensor, or :class:`EvaluationError` naming its type.

    Accepted: a tensor, a numpy array, a number or a (nested) list of numbers; refused
    with the type named: ``None``, strings, dicts and other objects.
    """
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray) and a.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, (int, float, np.number, list, tuple)) and not isinstance(a, (str, bytes)):
        try:
            return torch.as_tensor(np.asarray(a, dtype=np.float64))
        except (TypeError, ValueError):
            pass
    raise EvaluationError(f"{_describe(source)} returned a {type(a).__name__} ({a!r:.60}); it must return "
                          "numbers: a tensor, numpy array or list of floats, one value per image [k]")


class FunctionObjective(BaseObjective):
    """A plain function of index batches ``f(I int64 [k, d]) -> [k]`` as an objective.

    Used for benchmark problems with known maxima (``known_max``) and analytic black boxes.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], space: LatentSpace, *, cache: bool = True,
                 known_max: float | None = None, name: str = "function") -> None:
        super().__init__(space, cache=cache)
        self.fn = fn
        self.known_max = known_max
        self.name = name

    def _evaluate(self, I: np.ndarray) -> np.ndarray:
        return _numeric(self.fn(I), self.fn).double().numpy()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(function=self.name, known_max=self.known_max)
        return out


def _describe(obj: Any) -> str:
    desc = getattr(obj, "describe", None)
    if callable(desc):
        return str(desc())
    return getattr(obj, "name", None) or type(obj).__name__
