"""Gradient activation maximisation (the classic AM baseline), in ask/tell form.

Adam (``torch.optim.Adam``) ascends the target's activation through a
differentiable pipeline, on ``k`` independent chains:

* :class:`~mango.spaces.GridSpace` (GAN / pixel / Fourier latents): a continuous
  ``z [k, *shape]`` (started at random grid levels, kept inside the levels'
  range) is passed directly to ``generator(z)``; the hard code is
  ``space.encode(z)`` (nearest level).
* :class:`~mango.spaces.CodebookSpace` (VQ-VAE): logits ``[k, *shape, n]``; the
  relaxed choice ``p = softmax((logits [+ Gumbel noise]) / tau)`` (sums to 1 over
  the last axis) goes to ``generator.decode_soft(p)``; ``tau`` anneals
  geometrically from ``tau_start`` to ``tau_end`` over ``anneal_steps`` Adam
  steps; the hard code is ``argmax(logits)``.
* ``jitter > 0``: each step translates every image by a random shift of up to
  ``jitter`` pixels (circular) before the target, a standard AM regulariser.
* Spiking targets work through snnTorch's surrogate gradients (the target must
  say ``differentiable = True`` and compute with grad enabled).

Budget accounting: every Adam step is one forward pass of ``k`` images and is
recorded with ``self.spend(k)`` (the loop takes it with ``take_spent()`` and
counts it; the backward pass is not counted separately; it costs about two
forwards). An ``ask(limit)`` takes no more Adam steps than leave room for the
``k`` hard codes within ``limit``. ``ask`` returns the *hard* codes; the
loop evaluates them through the objective, so the activation reported is always
that of a decoded hard image, never of a relaxed one.
"""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError
from ..protocols import flag
from ..spaces import CodebookSpace, GridSpace, LatentSpace
from .base import Optimizer

__all__ = ["GradientAM"]

log = logging.getLogger(__name__)


class GradientAM(Optimizer):
    """Adam on a continuous / relaxed latent through a differentiable generator and target.

    Args:
        space: the search space (``GridSpace`` or ``CodebookSpace``).
        batch_size: number of chains ``k``.
        seed: fixes initial latents, Gumbel noise and jitter.
        lr: Adam learning rate.
        steps_per_ask: Adam steps between two ``ask`` results (each counts ``k`` queries).
        tau_start, tau_end, anneal_steps: softmax temperature schedule (codebook spaces).
        gumbel: add Gumbel noise to the logits (Gumbel-softmax) instead of a plain softmax.
        jitter: maximal random translation in pixels (0: off).
        init_logit_scale: std of the initial logits (codebook spaces).
        budget: unused (accepted for a uniform factory signature; the loop's ``ask(limit)`` bounds the steps).
    """

    name: ClassVar[str] = "gradient"
    description: ClassVar[str] = "Adam on a continuous (grid) or softmax-relaxed (codebook) latent; needs a differentiable pipeline"
    needs_objective: ClassVar[bool] = True

    def __init__(self, space: LatentSpace, batch_size: int = 10, seed: int = 0, lr: float = 0.05,
                 steps_per_ask: int = 10, tau_start: float = 1.0, tau_end: float = 0.1,
                 anneal_steps: int = 200, gumbel: bool = False, jitter: int = 0,
                 init_logit_scale: float = 0.1, budget: int | None = None) -> None:
        super().__init__(space, batch_size=batch_size, seed=seed)
        if not isinstance(space, (GridSpace, CodebookSpace)):
            raise ConfigError(f"gradient AM supports grid and codebook spaces, got {type(space).__name__}")
        if float(lr) <= 0:
            raise ConfigError(f"lr must be > 0, got {lr!r}")
        if int(steps_per_ask) < 1:
            raise ConfigError(f"steps_per_ask must be >= 1, got {steps_per_ask!r}")
        if not (float(tau_start) > 0 and float(tau_end) > 0):
            raise ConfigError(f"temperatures must be > 0, got tau_start={tau_start!r}, tau_end={tau_end!r}")
        if int(jitter) < 0:
            raise ConfigError(f"jitter must be >= 0 pixels, got {jitter!r}")
        self.lr = float(lr)
        self.steps_per_ask = int(steps_per_ask)
        self.tau_start, self.tau_end = float(tau_start), float(tau_end)
        self.anneal_steps = max(1, int(anneal_steps))
        self.gumbel = bool(gumbel)
        self.jitter = int(jitter)
        self.init_logit_scale = float(init_logit_scale)
        self.n_steps = 0
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
            parts.append(f"generator {_name(objective.generator)} has no decode_soft(p) for a relaxed codebook")
        if parts:
            raise ConfigError("gradient AM needs a differentiable pipeline: " + "; ".join(parts)
                              + " (use a gradient-free optimizer instead)")
        super().bind(objective)
        self.device = torch.device(getattr(objective, "device", "cpu"))
        self._init_latent()

    def _init_latent(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)
        sp = self.space
        if isinstance(sp, GridSpace):
            z = sp.decode(sp.sample(rng, self.k), self.device).float()
            self._lo, self._hi = float(sp.values.min()), float(sp.values.max())
        else:
            z = torch.from_numpy(rng.standard_normal((self.k, *sp.shape, sp.n)).astype(np.float32))
            z = (z * self.init_logit_scale).to(self.device)
        self._param = z.clone().requires_grad_(True)
        self._adam = torch.optim.Adam([self._param], lr=self.lr)

    # -- the pieces of one step ---------------------------------------------------
    def temperature(self) -> float:
        """Current softmax temperature (geometric from tau_start to tau_end)."""
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

    def step(self) -> float:
        """One Adam step on all chains; spends ``k`` queries. Returns the mean relaxed activation."""
        if self._param is None:
            raise ConfigError("gradient AM is not bound to an objective: call bind(objective) first "
                              "(the loop does this for optimizers with needs_objective)")
        with torch.enable_grad():
            x = self._jitter(self._images())
            a = self.objective.activations(x)
            if a.ndim != 1 or a.shape[0] != self.k:
                raise ConfigError(f"gradient AM needs one activation per chain ([{self.k}]), got {tuple(a.shape)}")
            (g,) = torch.autograd.grad(-a.sum(), [self._param])
        self.spend(self.k)
        self._param.grad = g
        self._adam.step()
        self._adam.zero_grad(set_to_none=True)
        if isinstance(self.space, GridSpace):
            with torch.no_grad():
                self._param.clamp_(self._lo, self._hi)
        self.n_steps += 1
        return float(a.detach().mean())

    # -- ask / tell ---------------------------------------------------------------
    def hard_codes(self) -> np.ndarray:
        """Current hard codes ``int64 [k, d]`` (nearest levels, or argmax of the logits)."""
        z = self._param.detach()
        if isinstance(self.space, GridSpace):
            return self.space.encode(z.cpu())
        return z.argmax(dim=-1).reshape(self.k, self.space.d).cpu().numpy().astype(np.int64)

    def _ask(self) -> np.ndarray:
        if self._param is None:
            raise ConfigError("gradient AM is not bound to an objective: call bind(objective) first")
        steps = self.steps_per_ask
        if self.ask_limit is not None:   # leave room for the k hard codes: k queries per Adam step
            steps = max(0, min(steps, (self.ask_limit - self.k) // self.k))
        for _ in range(steps):
            self.step()
        return self.hard_codes()

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        # the chains follow their own gradients; the base class keeps the best hard code
        log.debug("gradient AM step %d: best hard activation so far %.4g", self.n_steps, self.best_y)


def _name(obj: Any) -> str:
    return getattr(obj, "name", None) or type(obj).__name__
