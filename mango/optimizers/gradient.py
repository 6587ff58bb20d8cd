"""Gradient activation maximisation (the white-box AM baseline), in ask/tell form.

The recipe (defaults; every number is a parameter of :class:`GradientAM`):

* **Codebook spaces** (:class:`~mango.spaces.CodebookSpace`, VQ-VAE): logits
  ``L [k, *shape, n]`` initialised ``init_logit_scale * N(0, 1)`` (0.01); the relaxed
  image is ``generator.decode_soft(softmax(L / tau))`` (the codes are mixed as
  ``softmax(L / tau) @ codebook``); ``tau`` anneals geometrically from ``tau_start``
  (1) to ``tau_end`` (0.05) over the chain's ``steps`` (300) Adam steps; the hard
  code is ``argmax(L)``. ``gumbel=True`` adds Gumbel noise to ``L`` (off by default).
* **Grid spaces** (:class:`~mango.spaces.GridSpace`: GAN latents, pixel and Fourier
  parametrisations): a continuous latent ``z [k, *shape]``, started at random grid
  levels, goes straight to ``generator(z)`` and is clipped to the levels' range
  after every step; the hard code is ``space.encode(z)`` (nearest level).
* **Adam** (``torch.optim.Adam``) at ``lr`` (0.1) on ``loss = -sum(activation)`` of the
  ``k`` chains (``batch_size``, default 1: the plain single-chain recipe).
* **Spiking targets**: when the target has ``surrogate_forward(images, slope)`` (e.g.
  :class:`mango.targets.spiking.SpikingTarget`) that is used: the same Leaky update,
  Heaviside spikes forward, fast-sigmoid surrogate ``1 / (1 + slope |v - thr|)^2``
  backward (``slope`` 25), so gradients flow where the unit never fires; the activation
  is the plain firing rate (mean over ``T``, and over positions for a channel). Other
  targets are called with gradients enabled (their own ``differentiable`` forward).
* **Scoring**: every ``score_every`` (10) steps ``ask`` returns the ``k`` hard codes;
  the loop evaluates them with the exact black box (for a spiking unit: the exact
  spikes, graded readout), so the result is always a decoded hard image's value.
* **Budget**: when the run's ``budget`` is known and ``k`` chains of ``steps`` steps (each
  step ``k`` queries, plus ``k`` per ``score_every`` steps for the hard codes) do not fit
  in it, ``steps`` is cut to what fits, so the temperature still anneals to ``tau_end``
  (e.g. ``batch_size`` 10 at budget 1,000: 90 steps per chain).
* **Restarts**: when a chain has taken its ``steps`` and budget is left, a fresh chain
  starts (new initial logits from the seed and the restart number; Adam reset), so a
  budget of 1,000 runs three 330-query chains instead of one.
* ``jitter > 0``: each step translates every image by a random circular shift of up
  to ``jitter`` pixels before the target (a standard AM regulariser; off by default).

Query accounting (the loop's interface): one forward pass of one image is one query,
so an Adam step on ``k`` chains spends ``k`` (the backward pass is not counted
separately; it costs about two forwards). ``ask(limit)`` spends at most ``limit``
queries in all: its Adam steps plus the hard codes it returns, always leaving room for
those rows; ``take_spent()`` returns the queries the steps spent since its last call
(the loop adds them to the budget and journals them as the batch's ``external``
count). Called without ``limit`` (a direct call outside the loop), ``ask`` bounds
itself with ``budget`` when given.

Measured recipe figures: ``experiments/results/gradient_am.md``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError
from ..modes import eval_mode
from ..protocols import flag
from ..spaces import CodebookSpace, GridSpace, LatentSpace
from .base import Optimizer

__all__ = ["GradientAM"]

log = logging.getLogger(__name__)


class GradientAM(Optimizer):
    """Adam on a continuous (grid) or softmax-relaxed (codebook) latent through a differentiable pipeline.

    Args:
        space: the search space (``GridSpace`` or ``CodebookSpace``).
        batch_size: number of chains ``k`` run side by side (>= 1; default 1).
        seed: fixes the initial latents of every chain and restart, Gumbel noise and jitter.
        lr: Adam learning rate (> 0).
        steps: Adam steps per chain (>= 1; cut to what ``budget`` allows); the temperature
            reaches ``tau_end`` at the last.
        score_every: Adam steps between two ``ask`` results (the hard codes scored).
        tau_start, tau_end: softmax temperature schedule (codebook spaces; > 0).
        anneal_steps: steps over which ``tau`` anneals (default: ``steps``).
        init_logit_scale: std of the initial logits (codebook spaces).
        slope: fast-sigmoid surrogate slope passed to a target's ``surrogate_forward``.
        restarts: start a fresh chain after ``steps`` while budget is left (else keep
            returning the last hard codes).
        gumbel: add Gumbel noise to the logits (Gumbel-softmax).
        jitter: maximal random translation in pixels (0: off).
        budget: the run's total queries, used only when ``ask`` gets no ``limit``.
        steps_per_ask: old name of ``score_every`` (kept for configs).
    """

    description: ClassVar[str] = ("Adam on a continuous (grid) or softmax-relaxed, annealed (codebook) latent, "
                                  "surrogate spikes; needs a differentiable pipeline")
    needs_objective: ClassVar[bool] = True

    def __init__(self, space: LatentSpace, batch_size: int = 1, seed: int = 0, lr: float = 0.1,
                 steps: int = 300, score_every: int = 10, tau_start: float = 1.0, tau_end: float = 0.05,
                 anneal_steps: int | None = None, init_logit_scale: float = 0.01, slope: float = 25.0,
                 restarts: bool = True, gumbel: bool = False, jitter: int = 0, budget: int | None = None,
                 steps_per_ask: int | None = None) -> None:
        super().__init__(space, batch_size=batch_size, seed=seed)
        if not isinstance(space, (GridSpace, CodebookSpace)):
            raise ConfigError(f"gradient AM supports grid and codebook spaces, got {type(space).__name__}")
        if steps_per_ask is not None:
            score_every = steps_per_ask
        if not float(lr) > 0:
            raise ConfigError(f"lr must be > 0, got {lr!r}")
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps!r}")
        if int(score_every) < 1:
            raise ConfigError(f"score_every (steps_per_ask) must be >= 1, got {score_every!r}")
        if not (float(tau_start) > 0 and float(tau_end) > 0):
            raise ConfigError(f"temperatures must be > 0, got tau_start={tau_start!r}, tau_end={tau_end!r}")
        if not float(slope) > 0:
            raise ConfigError(f"surrogate slope must be > 0, got {slope!r}")
        if int(jitter) < 0:
            raise ConfigError(f"jitter must be >= 0 pixels, got {jitter!r}")
        self.lr = float(lr)
        self.score_every = int(score_every)
        self.steps = int(steps)
        if budget is not None:      # k chains whose steps do not fit the budget: anneal over the steps that do
            fit = int(int(budget) // (self.k * (1.0 + 1.0 / self.score_every)))
            self.steps = max(1, min(self.steps, fit))
        self.tau_start, self.tau_end = float(tau_start), float(tau_end)
        self.anneal_steps = max(1, int(anneal_steps if anneal_steps is not None else self.steps))
        self.init_logit_scale = float(init_logit_scale)
        self.slope = float(slope)
        self.restarts = bool(restarts)
        self.gumbel = bool(gumbel)
        self.jitter = int(jitter)
        self.budget = None if budget is None else int(budget)
        self.n_steps = 0            # Adam steps of the current chain
        self.total_steps = 0        # Adam steps of all chains (each spent k queries)
        self.chain = 0              # restart number
        self.objective: Any = None
        self._param: torch.Tensor | None = None
        self._adam: torch.optim.Adam | None = None
        self._gen: torch.Generator | None = None

    # -- set-up ---------------------------------------------------------------
    def bind(self, objective: Any) -> None:
        """Attach the pipeline; raises :class:`ConfigError` naming the non-differentiable part."""
        missing = [a for a in ("generator", "target", "activations") if not hasattr(objective, a)]
        if missing:
            raise ConfigError(f"gradient AM needs a generator+target objective (mango.objective.Objective); "
                              f"this objective has no {', '.join(missing)}")
        parts = []
        if not flag(objective.generator, "differentiable"):
            parts.append(f"generator {_name(objective.generator)} is not differentiable")
        if not flag(objective.target, "differentiable"):
            parts.append(f"target {_name(objective.target)} is not differentiable")
        if isinstance(self.space, CodebookSpace) and not callable(getattr(objective.generator, "decode_soft", None)):
            parts.append(f"generator {_name(objective.generator)} has no decode_soft(p) for a relaxed codebook "
                         "(decode_soft(p): codebook probabilities p [k, *latent shape, n] -> images, e.g. the "
                         "probability-weighted mix of the codebook vectors decoded; a generator class that adds it "
                         "reaches the gradient baseline)")
        if parts:
            raise ConfigError("gradient AM needs a differentiable pipeline: " + "; ".join(parts)
                              + " (use a gradient-free optimizer instead)")
        super().bind(objective)
        self.device = torch.device(getattr(objective, "device", "cpu"))
        self._init_latent()

    def _init_latent(self) -> None:
        """A fresh chain: initial latents from ``(seed, chain)``, Adam reset, temperature back to ``tau_start``."""
        rng = np.random.default_rng([self.seed, self.chain])
        self._gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2 ** 62)))
        sp = self.space
        if isinstance(sp, GridSpace):
            z = sp.decode(sp.sample(rng, self.k), self.device).float()
            self._lo, self._hi = float(sp.values.min()), float(sp.values.max())
        else:
            z = torch.from_numpy(rng.standard_normal((self.k, *sp.shape, sp.n)).astype(np.float32))
            z = (z * self.init_logit_scale).to(self.device)
        self._param = z.clone().requires_grad_(True)
        self._adam = torch.optim.Adam([self._param], lr=self.lr)
        self.n_steps = 0

    # -- the pieces of one step ---------------------------------------------------
    def temperature(self) -> float:
        """Current softmax temperature (geometric from tau_start to tau_end over ``anneal_steps``)."""
        f = min(self.n_steps / self.anneal_steps, 1.0)
        return self.tau_start * math.exp(f * math.log(self.tau_end / self.tau_start))

    def _images(self) -> torch.Tensor:
        gen = self.objective.generator
        if isinstance(self.space, GridSpace):
            return gen(self._param)
        logits = self._param
        if self.gumbel:
            u = torch.rand(logits.shape, generator=self._gen).to(logits.device).clamp_(1e-9, 1 - 1e-9)
            logits = logits - torch.log(-torch.log(u))
        p = torch.softmax(logits / self.temperature(), dim=-1)
        return gen.decode_soft(p)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter <= 0 or x.ndim < 4:
            return x
        j = self.jitter
        dy, dx = (int(v) for v in torch.randint(-j, j + 1, (2,), generator=self._gen))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    def _activations(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable activations ``[k]``: the target's ``surrogate_forward`` when it has one."""
        obj = self.objective
        sf = getattr(obj.target, "surrogate_forward", None)
        if not callable(sf):
            return obj.activations(x)
        transform = getattr(obj, "transform", None)
        a = sf(transform(x) if transform else x, slope=self.slope)
        select = getattr(obj, "select", None)
        return select(a) if select is not None else a

    def step(self) -> float:
        """One Adam step on all chains (spends ``k`` queries). Returns the mean relaxed activation."""
        if self._param is None:
            raise ConfigError("gradient AM is not bound to an objective: call bind(objective) first "
                              "(the loop does this for optimizers with needs_objective)")
        with torch.enable_grad():
            with eval_mode(self.objective.generator):       # the user's generator gets its own mode back
                x = self._jitter(self._images())
            a = self._activations(x)
            if a.ndim != 1 or a.shape[0] != self.k:
                raise ConfigError(f"gradient AM needs one activation per chain ([{self.k}]), got {tuple(a.shape)}")
            g = self._gradient(a)
        self.spend(self.k)
        self._param.grad = g
        self._adam.step()
        self._adam.zero_grad(set_to_none=True)
        if isinstance(self.space, GridSpace):
            with torch.no_grad():
                self._param.clamp_(self._lo, self._hi)
        self.n_steps += 1
        self.total_steps += 1
        return float(a.detach().mean())

    def _gradient(self, a: torch.Tensor) -> torch.Tensor:
        """``d(-sum a) / d latent``, refusing activations whose graph does not reach the latent (a model that
        thresholds, rounds, detaches or leaves autograd, perhaps before weights of its own that do require
        grad) with a message naming the model, instead of torch's "does not require grad"."""
        g = torch.autograd.grad(-a.sum(), [self._param], allow_unused=True)[0] if a.requires_grad else None
        if g is None:
            target = getattr(self.objective, "target", self.objective)
            model = getattr(target, "model", None)      # a user's module behind a model target: name it
            name = f"model {type(model).__name__}" if isinstance(model, torch.nn.Module) else f"target {_name(target)}"
            raise ConfigError(f"gradient AM needs a differentiable pipeline: the activations of {name} carry no "
                              "gradient back to the generator's latent (the model thresholds, rounds, detaches or "
                              "runs without autograd on the way); use a gradient-free optimizer instead")
        return g

    def check_differentiable(self) -> None:
        """One forward pass of the current chains with autograd on, to refuse a pipeline whose activations carry
        no gradient before a run starts (``mango compare`` calls it while checking a grid; it is not a query).

        Raises:
            ConfigError: as :meth:`step` would at the run's first step.
        """
        if self._param is None:
            raise ConfigError("gradient AM is not bound to an objective: call bind(objective) first")
        with torch.enable_grad():
            with eval_mode(self.objective.generator):
                x = self._images()
            self._gradient(self._activations(x))

    # -- ask / tell ---------------------------------------------------------------
    def hard_codes(self) -> np.ndarray:
        """Current hard codes ``int64 [k, d]`` (nearest levels, or argmax of the logits)."""
        z = self._param.detach()
        if isinstance(self.space, GridSpace):
            return np.asarray(self.space.encode(z.cpu()), dtype=np.int64).reshape(self.k, self.space.d)
        return z.argmax(dim=-1).reshape(self.k, self.space.d).cpu().numpy().astype(np.int64)

    def _ask(self) -> np.ndarray:
        """Up to ``score_every`` Adam steps, then the ``k`` hard codes ``int64 [k', d]``.

        The loop's ``limit`` (:attr:`ask_limit`: the most queries this ask may spend, its steps
        ``k`` each plus the rows returned) bounds the steps so that the rows always fit
        (``k' = min(k, limit)``); without a limit, ``budget`` (when given) bounds them.
        """
        if self._param is None:
            raise ConfigError("gradient AM is not bound to an objective: call bind(objective) first")
        limit = self.ask_limit
        if limit is None and self.budget is not None:
            limit = max(1, self.budget - self.total_steps * self.k - self.n_told)
        rows = self.k if limit is None else max(1, min(self.k, int(limit)))
        steps = self.score_every
        if limit is not None:
            steps = max(0, min(steps, (int(limit) - rows) // self.k))
        for _ in range(steps):
            if self.n_steps >= self.steps:
                if not self.restarts:
                    break
                self.chain += 1
                self._init_latent()
                log.debug("gradient AM: chain %d starts (seed %d)", self.chain, self.seed)
            self.step()
        return self.hard_codes()[:rows]

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        # the chains follow their own gradients; the base class keeps the best hard code
        log.debug("gradient AM chain %d step %d: best hard value so far %.4g", self.chain, self.n_steps, self.best_y)


def _name(obj: Any) -> str:
    return getattr(obj, "name", None) or type(obj).__name__
