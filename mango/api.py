"""The one-liner: maximize a unit of any torch or snnTorch model, in the spirit of lucent's ``render_vis``.

    import mango
    res = mango.maximize(model, "conv2:5", generator="vqvae-digits", budget=1000, seed=0)
    res.best_image          # [C, H, W] tensor, the generator's output for the best code
    res.trace               # float64 [budget], every query's value in order
    res.save("runs/conv2_5")  # result.json, history.npz, best.png: the folder `mango run --out` writes

``model`` is any ``nn.Module`` (or a file / ``"package.module:function"`` factory).
A model with snnTorch neurons is run as a spiking target: every image starts from
reset neurons and is presented for ``T`` steps (a step module) or once to a net
whose ``forward`` loops over time itself; the value is the unit's firing rate.
``objective`` is a ``"layer:unit"`` string or a composed value from
:mod:`mango.objectives` (``"conv2:5 - 0.5*output:3"``, ``"lif2:3 + 0.01*mem(lif2:3)"``).

The model adapters live in ``mango.targets`` and are reached by name through
:mod:`mango.registry` (the registered target ``model``), never imported here.
When the first argument is already an :class:`~mango.objective.BaseObjective`,
:func:`maximize` is :func:`mango.loop.maximize`.
"""
from __future__ import annotations

import html
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

import numpy as np
import torch

from . import loop, registry
from .devices import full_float32, module_device
from .config import check_device
from .errors import ConfigError, choices_hint
from .imaging import display_uint8, upscale
from .interrupt import GracefulInterrupt, Standing, say_stopped
from .optimizers import DEFAULT_OPTIMIZER
from .objective import BaseObjective, Objective, check_eval_batch_size
from .objectives import ObjectiveExpr, as_objective

__all__ = ["maximize", "maximize_model", "Visualization"]


@dataclass
class Visualization:
    """What :func:`maximize` returns for a model: the loop's result plus what made it.

    Attributes:
        result: the loop's :class:`~mango.loop.Result` (every other attribute not found here,
            e.g. ``n_queries``, ``seconds``, ``query_index``, is read from it).
        objective: the evaluated :class:`~mango.objective.Objective` (generator + target).
        expr: the objective value that was maximized (``str(expr)`` is its ``"layer:unit"`` text).
        url: the live view's URL when the run was started with ``watch``, else None.
    """

    result: loop.Result
    objective: Objective
    expr: ObjectiveExpr
    url: str | None = None

    @property
    def best_image(self) -> torch.Tensor:
        """The best image ``[C, H, W]`` in the generator's output space."""
        return self.result.best_image

    @property
    def best_value(self) -> float:
        """The objective's value at the best image (for one spiking unit: its firing rate in [0, 1],
        recovered exactly from the graded search score)."""
        r = self.result
        return r.best_value if r.best_reported is None else r.best_reported

    @property
    def best_score(self) -> float:
        """The search score at the best image (for one spiking unit: the graded readout, the rate
        plus a tie term below one spike)."""
        return self.result.best_value

    @property
    def best_code(self) -> np.ndarray:
        """``int64 [d]`` latent indices of the best image."""
        return self.result.best_code

    @property
    def trace(self) -> np.ndarray:
        """``float64 [N]``: the objective's value (as :attr:`best_value`) of every scored code, in the order asked:
        every query for a gradient-free optimizer; for the gradient baseline, whose Adam steps spend queries on
        relaxed images without a code, only the hard codes it scores (plot against :attr:`query_index`)."""
        r = self.result
        return r.values if r.reported is None else r.reported

    @property
    def query_index(self) -> np.ndarray:
        """``int64 [N]``: the number of queries spent when each :attr:`trace` entry was scored (``1..budget``;
        ``1, 2, ..., N`` for a gradient-free optimizer), the x axis that puts every optimizer on one scale."""
        return np.asarray(self.result.query_index, dtype=np.int64)

    @property
    def best_so_far(self) -> np.ndarray:
        """``float64 [N]``: running maximum of :attr:`trace`."""
        return np.maximum.accumulate(self.trace) if len(self.trace) else self.trace

    def activation(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The objective's values ``float64 [k]`` (as :attr:`best_value`) of images ``[k, C, H, W]``, or of one
        image ``[C, H, W]`` such as :attr:`best_image` (e.g. edited best images), in the generator's output
        space (float; a numpy array is taken too).

        Raises:
            ConfigError: images of another shape than the generator's ``[C, H, W]``, or integer (e.g. uint8
                display) images.
        """
        x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        want = tuple(self.result.best_image.shape)
        if tuple(x.shape) == want:
            x = x[None]                  # one image, as best_image is
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ConfigError(f"activation takes images [k, {', '.join(map(str, want))}] or one image "
                              f"[{', '.join(map(str, want))}] (as best_image), got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise ConfigError(f"activation takes images in the generator's output space (floats, as best_image), "
                              f"got {x.dtype} (a display image such as res.image is uint8)")
        x = x.to(self.result.best_image.dtype)   # an edited float64 numpy image: the model's float32
        with torch.no_grad(), full_float32(self.objective.device):      # as the search scored them
            a = self.objective.activations(x.to(self.objective.device)).double().cpu().numpy()
        return self.objective.reported(a)

    @property
    def image(self) -> np.ndarray:
        """``uint8 [H, W, C]``: the best image for display, as ``best.png`` shows it (the generator's
        own conversion, e.g. CIFAR normalisation undone): ``plt.imshow(res.image)`` (C = 1: ``[H, W]``)."""
        arr = self.result.best_uint8
        if arr is None:
            arr = display_uint8(self.result.best_image[None], getattr(self.objective, "generator", None))[0]
        return arr[..., 0] if arr.shape[-1] == 1 else arr

    def show(self, ax: Any = None) -> Any:
        """Draw the best image with matplotlib (on ``ax``, else a new figure), titled with the unit and
        its best value; returns the axes."""
        import matplotlib.pyplot as plt   # third-party, only when drawing

        if ax is None:
            _, ax = plt.subplots(figsize=(3, 3))
        img = self.image
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{self.expr}: {self.best_value:.4g}" + (" (interrupted)" if self.result.interrupted else ""),
                     fontsize=9)
        return ax

    def save(self, folder: str | Path) -> Path:
        """Write ``result.json``, ``history.npz`` and ``best.png`` into ``folder`` (what the CLI writes).

        Raises:
            ConfigError: ``folder`` is a file or cannot be written, or it is a run folder (it holds a
                ``run.json`` or journal): a result written there would be mixed with that run's files.
        """
        from .clitools import check_out_dir

        out = Path(folder)
        held = [n for n in ("run.json", "journal.jsonl") if (out / n).exists()]
        if held:
            raise ConfigError(f"{out} is a run folder ({', '.join(held)}): a result saved there would be mixed with "
                              "that run's files (its report would show this result as that run's); save into "
                              "another folder")
        self.result.save(check_out_dir(out, "save folder"))
        return out

    def __repr__(self) -> str:   # the dataclass repr would print every array of the result in full
        r = self.result
        img = "" if r.best_image is None else f", best_image {list(r.best_image.shape)}"
        T = getattr(getattr(self.objective, "target", None), "T", None)     # a spiking net's time steps
        steps = f" over T={T} steps" if isinstance(T, int) and not isinstance(T, bool) else ""
        return (f"Visualization({str(self.expr)!r}{steps}: best score {r._headline()}{img}; "
                f"best_value, trace, best_so_far, image, show(), save(folder))")

    def _repr_html_(self) -> str:
        """A notebook's view: the best image (enlarged, pixels kept sharp) beside the one-line summary."""
        import base64
        import io

        import imageio.v3 as iio   # third-party, only when a notebook asks

        img = self.image
        buf = io.BytesIO()
        iio.imwrite(buf, upscale(img, max(1, 128 // max(1, img.shape[0]))), extension=".png")
        src = base64.b64encode(buf.getvalue()).decode()
        return (f'<div style="display:flex;gap:12px;align-items:center"><img src="data:image/png;base64,{src}" '
                f'style="image-rendering:pixelated;width:128px"/><code>{html.escape(repr(self))}</code></div>')

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("result", "objective", "expr", "url"):
            raise AttributeError(name)
        try:
            return getattr(self.result, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (see dir(res): "
                                 "best_image, best_value, trace, image, show(), save(folder), ...)") from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {n for n in dir(self.result) if not n.startswith("_")})


def maximize(model: Any, *args: Any, **kwargs: Any) -> Visualization | loop.Result:
    """Maximize a unit of ``model``; see :func:`maximize_model` for the arguments.

    ``mango.maximize(model, "layer:unit", generator=..., optimizer=..., budget=..., seed=...)``
    returns a :class:`Visualization`. When ``model`` is already an objective
    (:class:`~mango.objective.BaseObjective`), this is :func:`mango.loop.maximize`
    (``maximize(objective, optimizer, budget, seed, ...)``) and returns its ``Result``.
    """
    if isinstance(model, BaseObjective):
        return loop.maximize(model, *args, **kwargs)
    return maximize_model(model, *args, **kwargs)


def maximize_model(model: torch.nn.Module | str, objective: str | ObjectiveExpr, *,
                   generator: Any = None, optimizer: str = DEFAULT_OPTIMIZER, budget: int = 1000, seed: int = 0,
                   batch_size: int | None = None, optimizer_params: dict[str, Any] | None = None,
                   generator_params: dict[str, Any] | None = None, target_params: dict[str, Any] | None = None,
                   device: str | torch.device | None = None, eval_batch_size: int | None = None,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   run_dir: str | Path | None = None, callbacks: Sequence[loop.Callback] = (),
                   progress: bool = False, watch: bool | str = False, **spiking: Any) -> Visualization:
    """Find the image (from ``generator``'s latent space) that maximizes ``objective`` in ``model``.

    Args:
        model: any ``nn.Module`` (CNN, MLP, snnTorch net), a pickled-module file, or a factory
            ``"package.module:function"``. It runs in eval mode, and each submodule gets its own train/eval
            mode back after every call; moved to ``device`` when given.
        objective: ``"layer:unit"`` (channel mean), ``"layer:unit@(y,x)"``, ``"output:c"`` /
            ``"logits:c"`` (class logit; a spiking net's class neuron rate), ``"softmax:c"``, or
            a weighted sum (string or :mod:`mango.objectives` value).
        generator: a registered generator name (``mango generators``; e.g. ``"vqvae-digits"``,
            images ``[k, 1, 16, 16]`` in [0, 1]) or a generator object with a ``space``. The model
            must accept its images (or pass ``transform``).
        optimizer: registered optimizer name (``mango optimizers``).
        budget: number of queries (images evaluated), > 0.
        seed: the run's seed (optimizer); the same seed gives the same run.
        batch_size: queries per ask (default: the optimizer's own).
        optimizer_params, generator_params: further parameters of those components.
        target_params: further parameters of the model target (``input_shape``; spiking:
            ``T``, ``encoding``, ``seed`` (Poisson), ``fast``, ``backend``).
        **spiking: shorthand for ``target_params`` (e.g. ``T=64``).
        device: torch device for the model, generator and evaluation (default: the model's).
        eval_batch_size: images per forward pass, which fixes the values (see
            :class:`mango.objective.Objective`; default 10 on CPU, 64 on GPUs; bound it by memory).
        transform: function applied to the generator's images before the model (resize, normalise).
        run_dir: journal the run into this folder (a re-run resumes it) and save the results there.
        callbacks: called after every batch with a :class:`~mango.loop.BatchEvent`.
        progress: show a progress bar (tqdm, on stderr) with the best value so far (a spiking unit's
            firing rate, with the search score beside it).
        watch: serve the live web page of the run (:mod:`mango.watch`) while it runs and after, until
            the Python process ends: ``True`` for 127.0.0.1 on port 8765 (a free port when it is taken),
            or ``"[HOST:]PORT"`` as ``--watch`` takes it. Needs ``run_dir`` (the page reads the folder);
            the URL is printed and kept as :attr:`Visualization.url`. A view an earlier call served at
            the same address is closed first (a re-run cell keeps its port; an open page follows).

    Returns:
        a :class:`Visualization`: ``best_image``, ``best_value``, ``trace``, ``image`` / ``show()``
        (for display), ``save(folder)``.

    Ctrl-C (a notebook's "interrupt kernel") stops the search after the batch in progress and returns
    the partial result (``res.interrupted`` is True; with ``run_dir`` its journal resumes the run when
    the same call is made again); a second Ctrl-C raises ``KeyboardInterrupt`` at once. A ``run_dir``
    holding a finished run of the same settings returns its stored result without evaluating (said on
    stderr); one recorded with other settings, or with other weights of the model or generator (a
    retrained model, another checkpoint: :mod:`mango.fingerprint`), is refused.
    """
    expr = as_objective(objective)
    callbacks = loop.check_run_args(optimizer, optimizer_params, callbacks)
    if not isinstance(watch, (bool, str)):
        raise ConfigError(f"watch must be True, False or a '[HOST:]PORT' string, got {watch!r}")
    if run_dir is not None:
        from .clitools import check_out_dir

        check_out_dir(run_dir, "run_dir")   # a file, /proc/x: one line naming it, before anything is built
    if watch is not False and run_dir is None:
        raise ConfigError("watch needs run_dir: the live view reads the run's folder (e.g. "
                          "mango.maximize(..., run_dir='runs/my_unit', watch=True))")
    if generator is None:
        raise ConfigError(f"maximize needs a generator: a registered name "
                          f"({', '.join(registry.names('generator'))}) or a generator object")
    if device is not None:
        check_device(str(device))     # a name torch does not know, or CUDA on a machine without it
    if isinstance(model, torch.nn.Module) and device is None:
        device = module_device(model)
    dev = torch.device(device or "cpu")
    if spiking:     # extra keywords go to the target: a typo of maximize's own keyword is named as such
        import inspect

        own = [k for k in inspect.signature(maximize_model).parameters if k not in ("model", "objective", "spiking")]
        takes = [k for k in registry.describe_params(registry.get("target", "model"))
                 if k not in ("model", "objective", *own)]
        for key in spiking:
            if key not in takes:
                raise ConfigError(f"unknown keyword {key!r} of mango.maximize; {choices_hint(key, own + takes)} "
                                  f"({', '.join(takes)}: the target's)")
    tparams = {**(target_params or {}), **spiking}
    if "objective" in tparams or "model" in tparams:
        raise ConfigError("pass the model and objective as maximize's first two arguments, not in target_params")
    target = registry.create("target", "model", tparams, model=model, objective=expr, device=str(dev))
    gname = None
    if isinstance(generator, str):
        gname = generator
        gparams = dict(generator_params or {})
        try:
            if "device" in registry.describe_params(registry.get("generator", gname)):
                gparams.setdefault("device", str(dev))
        except (TypeError, ValueError):
            pass
        generator = registry.create("generator", gname, gparams)
    elif generator_params:
        raise ConfigError("generator_params apply to a generator given by name, not to a generator object")
    if eval_batch_size is not None:
        check_eval_batch_size(eval_batch_size)   # named as this function's caller knows it
    obj = Objective(generator, target, device=dev, batch_size=eval_batch_size, transform=transform)
    config = {"generator": {"name": gname or type(generator).__name__, **(generator_params or {})},
              "target": {"name": "model", "model": _describe(model), "objective": str(expr), **tparams},
              "optimizer": {"name": optimizer, **(optimizer_params or {})}, "budget": budget, "seed": seed,
              "eval_batch_size": obj.batch_size}
    if batch_size is not None:
        config["batch_size"] = batch_size
    budget = loop.check_budget(budget)
    if watch is not False:   # a bad address is named now, before the run folder is touched
        from . import watch as live

        live.parse_watch("" if watch is True else watch)
    url = None

    def start(done: int, finished: bool) -> None:
        """The run folder is accepted (lock held, settings match): only now the live view and the resume line,
        so a refused call (another process's folder, other settings) starts and says nothing."""
        nonlocal url
        if watch is not False:
            url = _serve_watch("" if watch is True else watch, run_dir)
        if done and not finished:
            print(f"mango.maximize: resuming the run in {run_dir}: its journal holds {done} queries (replayed, not "
                  "evaluated again)", file=sys.stderr, flush=True)

    from .clitools import BarOnOpen

    opened = BarOnOpen(budget, bar=progress, desc=str(expr), start=start)
    standing = Standing()
    try:
        with GracefulInterrupt("mango.maximize") as stop:
            result = loop.maximize(obj, optimizer, budget, seed, batch_size=batch_size, params=optimizer_params,
                                   run_dir=run_dir, config=config, stop=stop, on_open=opened.on_open,
                                   callbacks=[*callbacks, standing, opened])
    except KeyboardInterrupt:
        _say_interrupted(standing.n_queries, budget, standing.best_value, run_dir)
        raise
    finally:
        opened.close()
    if result.interrupted:
        _say_interrupted(result.n_queries, budget, result.best_value, run_dir, returned=True)
    elif opened.finished:
        print(f"mango.maximize: {run_dir} holds a finished run of these settings: returning its stored result "
              f"(nothing was evaluated; use another run_dir to search again)", file=sys.stderr, flush=True)
    return Visualization(result, obj, expr, url)  # with run_dir, the loop has written the folder


#: ``(host, port)`` asked by an earlier ``maximize(watch=...)`` call of this process -> the URL it serves
_WATCHED: dict[tuple[str, int], str] = {}


def _serve_watch(value: str, run_dir: str | Path) -> str:
    """Serve the live view of ``run_dir`` at the address ``value`` asks for; prints and returns the URL.

    A view that an earlier call of this process serves at the same address (its run is over: calls
    return when their run ends) is stopped first, so a re-run cell takes the same port, and a page left
    open in the browser follows the new run instead of the old one.
    """
    from . import watch as live

    key = live.parse_watch(value)
    old = _WATCHED.pop(key, None)
    url = None
    if old is not None:
        live.stop(old)
        port = urlsplit(old).port   # the port it had (a free one when the asked one was taken): kept
        if port and port != key[1]:
            try:
                url = live.serve_option(f"[{key[0]}]:{port}" if ":" in key[0] else f"{key[0]}:{port}", run_dir,
                                        command=False)
            except ConfigError:     # taken in the meantime: the asked address, as for a first call
                url = None
    url = url or live.serve_option(value, run_dir, command=False)
    assert url is not None
    _WATCHED[key] = url
    return url


def _say_interrupted(n_queries: int, budget: int, best: float | None, run_dir: str | Path | None,
                     returned: bool = False) -> None:
    """Print where an interrupted :func:`maximize_model` stands and how to go on."""
    say_stopped("mango.maximize", n_queries, budget, best, None if run_dir is None else str(run_dir),
                "resume it: call mango.maximize again with the same arguments",
                "nothing was kept on disk (no run_dir); pass run_dir=FOLDER to make a run resumable", returned)


def _describe(model: Any) -> str:
    return model if isinstance(model, str) else type(model).__name__
