"""PROTES in ask/tell form (Batsheva et al., NeurIPS 2023), written in jax.

A probability distribution over the index grid is kept as a non-negative tensor
train ``T(i) = a^T |G_1[:, i_1, :]| ... |G_d[:, i_d, :]| b`` of rank ``r`` with
all-ones boundary vectors ``a, b``; ``P(i) = T(i) / sum_j T(j)``.

* ``ask``: draw ``k`` exact samples from ``P`` (left-to-right conditional
  sampling with right-interface vectors, all in one jitted ``lax.scan``).
* ``tell``: take the ``k_top`` best of the batch (optionally pooled with an elite
  of earlier batches) and do ``k_gd`` Adam (optax) steps on their mean negative
  log-likelihood, computed exactly in log scale.

With ``qtt=True`` (and ``n = 2**q``) the optimizer works on the QTT view of the
space: ``d * q`` binary variables. ``qtt="auto"`` (the default) takes the QTT view
when ``n`` is a power of two >= 64 (a VQ-VAE codebook of 512: 9 bits per position),
else the categorical one.

Defaults differ from the paper's (k=100, k_top=10, k_gd=1, lr=0.05, no elite), on
evidence. Both views: a batch of k=50, k_top=5 and an elite of the 20 best points
seen. Categorical view: k_gd=5 Adam steps per batch at lr=0.05 (the
``--sweep`` mode of ``experiments/protes_vs_reference.py``: clearly higher
fractions of the known maximum on separable and random TT problems than the
paper's setting). QTT view: k_gd=10 at lr=0.1: on units of the paper's spiking CNN
at 1,000 queries (``experiments/results/protes_budget_sweep.md``) this beat the
categorical defaults' median on every unit, and on the separable 64 x 128 problem
it reached 0.71 of the maximum against 0.64 (``experiments/results/
protes_vs_reference.txt``); on random TT tensors with n <= 16, whose structure is
low-rank in the original indices, the QTT view was worse, hence ``n >= 64``.
``r=5`` is kept.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..errors import ConfigError, check_int
from ..spaces import LatentSpace
from .base import Optimizer

__all__ = ["Protes", "QTT_AUTO_MIN_N", "DEFAULT_STEPS"]

#: ``qtt="auto"`` takes the QTT view for ``n = 2**q >= QTT_AUTO_MIN_N``.
QTT_AUTO_MIN_N = 64
#: default (k_gd, lr) per view: {qtt: (Adam steps per batch, learning rate)}.
DEFAULT_STEPS = {False: (5, 0.05), True: (10, 0.1)}


def _jax():
    import jax
    import jax.numpy as jnp
    import optax

    return jax, jnp, optax


#: compiled functions shared by every instance of the same shapes and learning rate
_FNS: dict[tuple[int, int, int, float, int], tuple] = {}


def _build_fns(d: int, n: int, r: int, lr: float, k: int):
    """Jitted sample / step / log-likelihood functions for a TT of ``d`` cores ``[r, n, r]``.

    Cached per ``(d, n, r, lr, k)`` for the whole process, so the seeds of a
    comparison, a resumed run or the runs of one worker compile once (~1-2 s on a
    CPU for the paper's 576 binary variables) instead of once per optimizer.
    """
    key = (int(d), int(n), int(r), float(lr), int(k))
    if key not in _FNS:
        _FNS[key] = _compile_fns(*key)
    return _FNS[key]


def _compile_fns(d: int, n: int, r: int, lr: float, k: int):
    jax, jnp, optax = _jax()
    opt = optax.adam(lr)

    def interfaces(G):
        # right interface vectors R[i] = sum_j G_{i+1..d} b, normalised; R[d-1] = b
        C = jnp.abs(G)
        S = C.sum(axis=2)  # [d, r, r] sum over levels

        def body(v, Si):
            w = Si @ v
            w = w / jnp.sum(w)
            return w, v

        _, R = jax.lax.scan(body, jnp.ones(r) / r, S, reverse=True)
        return C, R  # R[i]: interface to the right of core i

    @jax.jit
    def sample(G, key):
        C, R = interfaces(G)
        keys = jax.random.split(key, d)

        def body(q, data):
            Ci, Ri, kk = data  # [r, n, r], [r], key
            # p_j ∝ q^T Ci[:, j, :] Ri, for every sample (q: [k, r]); broadcast-multiply-sum
            # rather than einsum: XLA's CPU dot on r x r operands is slower (measured 1.4 vs 2.2 ms
            # per batch of 50 at 448 binary variables)
            p = (q[:, :, None] * (Ci * Ri).sum(2)[None]).sum(1)
            # inverse-CDF draw: one uniform per sample (Gumbel-max would need k*n random numbers)
            cdf = jnp.cumsum(p, axis=1)
            u = jax.random.uniform(kk, (p.shape[0], 1)) * cdf[:, -1:]
            idx = jnp.minimum(jnp.sum(cdf <= u, axis=1), p.shape[1] - 1)  # [k]
            q = (q[:, :, None] * jnp.take(Ci, idx, axis=1).transpose(1, 0, 2)).sum(1)
            q = q / jnp.sum(q, axis=1, keepdims=True)
            return q, idx

        q0 = jnp.ones((k, r)) / r
        _, I = jax.lax.scan(body, q0, (C, R, keys))
        return I.T  # [k, d]

    def loglik(G, I):
        C = jnp.abs(G)
        S = C.sum(axis=2)

        def body(carry, data):
            v, u, lv, lu = carry  # numerator / normaliser row vectors with log-scales
            Ci, Si, i = data
            v = jnp.einsum("mr,mrs->ms", v, jnp.take(Ci, i, axis=1).transpose(1, 0, 2))
            u = u @ Si
            sv = jnp.sum(v, axis=1, keepdims=True)
            su = jnp.sum(u)
            return (v / sv, u / su, lv + jnp.log(sv[:, 0]), lu + jnp.log(su)), None

        m = I.shape[0]
        init = (jnp.ones((m, r)), jnp.ones(r), jnp.zeros(m), jnp.zeros(()))
        (v, u, lv, lu), _ = jax.lax.scan(body, init, (C, S, I.T))
        # T(i) = exp(lv) * sum(v * b), Z = exp(lu) * sum(u * b), b = ones
        return lv + jnp.log(jnp.sum(v, axis=1)) - lu - jnp.log(jnp.sum(u))

    def loss(G, I):
        return -jnp.mean(loglik(G, I))

    @partial(jax.jit, static_argnums=(3,))
    def steps(G, state, I, k_gd):
        def one(carry, _):
            G, state = carry
            g = jax.grad(loss)(G, I)
            upd, state = opt.update(g, state)
            return (optax.apply_updates(G, upd), state), None

        (G, state), _ = jax.lax.scan(one, (G, state), None, length=k_gd)
        return G, state

    return opt, sample, steps, jax.jit(loglik)


def default_k_top(k: int) -> int:
    """PROTES's default ``k_top`` for a batch of ``k``: ``min(5, max(1, k // 2))``."""
    return min(5, max(1, k // 2))


#: the most memory the TT cores of PROTES may take with the optimizer's state (GiB); a larger rank is refused
MAX_CORE_GIB = 4.0


class Protes(Optimizer):
    """PROTES: sample from a rank-``r`` non-negative TT distribution, fit it to the best samples.

    Args:
        space: search space (``qtt=True`` needs ``n = 2**q``).
        batch_size: samples per ask (``k``; default 50).
        seed: fixes sampling and initialisation.
        k_top: how many of the best samples of a batch the model is fitted to, in ``[1, k]``;
            default (``None``) ``min(5, max(1, k // 2))``: 5 for the default batch of 50,
            adapted to small batches (2 for ``k = 4``, 1 for ``k <= 3``).
        k_gd: Adam steps per batch (default 5 on the categorical view, 10 on the QTT view).
        lr: Adam learning rate (default 0.05 categorical, 0.1 QTT).
        rank: TT rank ``r``.
        qtt: search the QTT (binary) view of the space: ``True`` (needs ``n = 2**q``),
            ``False``, or ``"auto"`` (QTT when ``n`` is a power of two >= 64).
        elite: if > 0, fit to the ``k_top`` best of the current batch pooled with
            the ``elite`` best points seen so far (0: current batch only, as in the paper;
            default 20).
    """

    description = ("tensor-train sampling (PROTES, jax): codebook and grid alike as d categorical "
                   "variables, or d*q binary ones (qtt; default: when n = 2^q >= 64)")

    def __init__(self, space: LatentSpace, batch_size: int = 50, seed: int = 0, *, k_top: int | None = None,
                 k_gd: int | None = None, lr: float | None = None, rank: int = 5, qtt: bool | str = "auto",
                 elite: int = 20) -> None:
        super().__init__(space, batch_size, seed)
        if k_top is None:
            k_top = default_k_top(self.k)
        elif check_int(k_top, "k_top", minimum=1) > self.k:
            raise ConfigError(f"k_top={k_top} conflicts with batch_size={self.k}: k_top must be in "
                              f"[1, batch_size={self.k}] (leave k_top unset to get {default_k_top(self.k)} "
                              f"for this batch size, or raise batch_size)")
        check_int(rank, "rank", minimum=1)
        check_int(elite, "elite", minimum=0)
        if isinstance(qtt, str):
            if qtt != "auto":
                raise ConfigError(f"qtt must be true, false or 'auto', got {qtt!r}")
            n = int(space.n)
            qtt = n >= QTT_AUTO_MIN_N and (n & (n - 1)) == 0
        elif not isinstance(qtt, (bool, np.bool_)):
            raise ConfigError(f"qtt must be true, false or 'auto', got {qtt!r}")
        self.view = space.qtt() if qtt else None
        self.qtt = bool(qtt)
        dflt_gd, dflt_lr = DEFAULT_STEPS[self.qtt]
        k_gd = dflt_gd if k_gd is None else k_gd
        lr = dflt_lr if lr is None else lr
        check_int(k_gd, "k_gd", minimum=1)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not lr > 0:
            raise ConfigError(f"lr must be > 0, got {lr!r}")
        self.k_top, self.k_gd, self.lr, self.rank = int(k_top), int(k_gd), float(lr), int(rank)
        self.elite = int(elite)
        self.dd = self.view.d if self.view else space.d
        self.nn = 2 if self.view else space.n
        gib = 16 * self.dd * self.nn * self.rank ** 2 / 2 ** 30   # float32 cores, Adam's two moments, gradients
        if gib > MAX_CORE_GIB:
            raise ConfigError(f"rank={rank} is too large for this space: its TT cores ({self.dd} x {self.rank} x "
                              f"{self.nn} x {self.rank}) with Adam's state take ~{gib:.3g} GiB (at most "
                              f"{MAX_CORE_GIB} GiB); ranks of 2-10 are usual")
        jax, jnp, _ = _jax()
        self._opt, self._sample, self._steps, self._loglik = _build_fns(self.dd, self.nn, self.rank, self.lr, self.k)
        key = jax.random.PRNGKey(self.seed)
        key, sub = jax.random.split(key)
        self.G = jax.random.uniform(sub, (self.dd, self.rank, self.nn, self.rank))
        self.opt_state = self._opt.init(self.G)
        self.key = key
        self._elite_I = np.zeros((0, self.dd), dtype=np.int64)
        self._elite_y = np.zeros(0)

    def _ask(self) -> np.ndarray:
        jax, _, _ = _jax()
        self.key, sub = jax.random.split(self.key)
        J = np.asarray(self._sample(self.G, sub), dtype=np.int64)
        return self.view.from_bits(J) if self.view else J

    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        jnp = _jax()[1]
        J = self.view.to_bits(I) if self.view else I
        if self.elite > 0:
            J = np.concatenate([J, self._elite_I])
            y = np.concatenate([y, self._elite_y])
        order = np.argsort(-y, kind="stable")
        if self.elite > 0:
            keep = order[: self.elite]
            self._elite_I, self._elite_y = J[keep], y[keep]
        top = J[order[: self.k_top]]
        self.G, self.opt_state = self._steps(self.G, self.opt_state, jnp.asarray(top), self.k_gd)

    def log_prob(self, I: np.ndarray) -> np.ndarray:
        """log P(i) of the current model for indices ``[m, d]`` (exact)."""
        J = self.view.to_bits(I) if self.view else self.space.validate(I)
        return np.asarray(self._loglik(self.G, _jax()[1].asarray(J)))

    # -- state ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        jax = _jax()[0]
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        return {**self._base_state(), "G": np.asarray(self.G), "key": np.asarray(jax.random.key_data(self.key))
                if hasattr(jax.random, "key_data") else np.asarray(self.key),
                "opt_leaves": [np.asarray(x) for x in leaves],
                "elite_I": self._elite_I, "elite_y": self._elite_y}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        jax, jnp, _ = _jax()
        self._load_base_state(state)
        self.G = jnp.asarray(state["G"])
        self.key = jnp.asarray(state["key"], dtype=jnp.uint32)
        treedef = jax.tree_util.tree_structure(self._opt.init(self.G))
        self.opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in state["opt_leaves"]])
        self._elite_I = np.asarray(state["elite_I"], dtype=np.int64).reshape(-1, self.dd)
        self._elite_y = np.asarray(state["elite_y"], dtype=np.float64)
