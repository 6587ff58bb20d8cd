"""Elite local search over codes ("elite"): the default's second phase, and the default itself on rigs and grids.

1. **Design** (before any search): the ``starts`` codes (by default natural images through the
   generator's encoder, when it has one: :mod:`mango.optimizers.starts`), then, on a codebook
   space, ``uniform_codes`` *uniform* codes (one codebook entry at every position: a flat texture
   image). On the paper's VQ-VAE + spiking CNN, 32 random uniform codes already make 48 of the 63
   ``spiking2`` neurons that never fire on 100 random codes fire
   (``experiments/results/search_quality_tuning.md``). Which textures: by default
   (``uniform_pick="model"``, deterministic mode, a generator with ``code_vectors()`` and more
   entries than ``uniform_codes``) ``uniform_random`` (10) are drawn at random for the design and
   the rest are picked ``uniform_frac`` (0.36: 18 of a batch of 50) per batch in the next batches, each round the unseen
   entries ranked highest by an RBF kernel model of the score over the codebook vectors
   (:class:`~mango.optimizers.kernel.KernelScreen`, fitted to the ranks of the textures' values so
   far; mean + 0.5 posterior SD): a unit's liking for textures varies smoothly over the codebook,
   so the model finds the few textures a hard unit likes. Offline, on the paper pipeline's 512
   textures and every non-benchmark unit, the best of the 64 textures so picked is 0.91 / 0.89 /
   0.76 of the best of all 512 (``spiking1`` / ``spiking2`` / outputs) against 0.72 / 0.75 / 0.66
   for 64 drawn at random (``experiments/search_uniform_pick.py``). ``uniform_pick="random"`` (and noisy mode, where a single value per texture is a
   weak base for a model) asks a seeded random sample of them in the design.
2. **Search**: each child comes from a parent drawn from an elite of the ``elite`` best distinct
   codes seen (rank-weighted, the best most often), by one of four moves:

   * *recolour* (probability ``recolor``): every position holding the value at a random position
     takes another value: from a uniform code this tries another texture, from a mixed one it
     swaps one texture;
   * *block* (probability ``block``, 2-d code grids): a random rectangle takes one value;
   * *point*: ``m`` in ``1..max_mutations`` positions (``P(m) ∝ 1/m``) change, drawn in
     proportion to learned *position weights* (a position whose change gave a child at least as
     good as its parent gains weight: a trust region over code positions that follows a unit's
     receptive field). A *local* point move (2-d grids) draws its ``m`` positions in one 3 x 3
     window around a position drawn by those weights: a coherent local change, what a
     convolutional unit's small receptive field sees, where scattered changes would need several
     lucky moves in a row. Local moves are off by default (``window=0``); ``window`` fixes their
     share, and ``adapt_window=True`` adapts it during the run by probability matching on the
     recent success rates of the two kinds (a child better than its parent counts 1, an equal one
     0.25; rates decay toward 1/2 by 5 % per batch), kept in [0.1, 0.9]. Measured with
     ``max_mutations=4`` on the paper pipeline: more silent tuning channels fired, the benchmark
     mean did not rise (``experiments/results/search_quality_tuning.md``), so neither is default.
     Grid spaces (ordered levels) take rounded Gaussian steps;
   * *shift* (probability ``shift``, taken from the point moves; 2-d codebook grids): the whole
     code grid moves by ``dy, dx`` in ``-2..2`` (not both 0), the vacated rows and columns
     repeating the edge: a pattern that drives the unit at one place is tried at another (a
     convolutional unit's drive moves with the image; a channel may fire only near a border).

   A new codebook value is copied from another elite code (crossover) with probability
   ``1 - explore``, else drawn uniformly; except that a recolour or block move paints, with
   probability ``block_textures`` (0.5; deterministic mode), one of the ``texture_top`` (8) best
   textures told so far (weight ``1 / rank``): a region of a texture the unit likes, composed into
   the best code in one move. On silent tuning channels of the paper pipeline this fired 15 of 16
   runs against 10 of 16 (``experiments/results/search_quality_tuning.md``).
3. **Directional moves** (``direct_frac`` of each batch, once the design is asked; codebook
   spaces whose generator has ``code_vectors()``, e.g. a VQ-VAE): a ridge model of the score,
   linear in the codebook *vectors* of the codes
   (:class:`~mango.optimizers.directional.EmbeddingLinearModel`), is fitted to the last
   ``direct_window`` evaluated codes; a child of an elite parent moves ``1..direct_max`` positions
   (``P(m) ∝ 1/m``, drawn in proportion to their best predicted gain) each to one of its three
   best-predicted values. The model predicts values never tried at a position (through their
   vectors). Measured on tuning runs, these predictions rank the children's gains no better than
   chance (``experiments/search_model_quality.py``): the moves help by what they propose (few
   positions, values from elsewhere in the codebook), not as an estimate of a gradient.
   In noisy mode it is fitted to the codes' means and takes what re-asks and Thompson proposals
   leave of the batch.
   Optionally (``kernel_pool > 1``, deterministic mode) ``kernel_frac`` of each batch is *screened*:
   ``kernel_pool`` candidates per slot (directional and local moves as above) are ranked by an RBF
   kernel model of the score over the codes' codebook vectors
   (:class:`~mango.optimizers.kernel.KernelScreen`, fitted to the last ``kernel_window`` codes;
   predicted mean + ``kernel_beta`` posterior standard deviations) and the best are asked.
   **Adaptive mix** (``adapt_moves="best"``, the default; deterministic codebook spaces): the shares of
   directional, recolour, block, shift and point moves start at the fixed ones above and follow each
   kind's recent rate of children that beat the best value so far
   (:class:`~mango.optimizers.bandit.MoveMix`: share ∝ fixed share x rate, rates over trials decaying
   by 0.9 per batch and shrunk toward the pooled rate with 5 trials' weight, each kind kept at >= 1/4
   of its fixed share). Silent channels differ in which kind brings them to fire: whole-region
   moves for some, long runs of point moves for others; every fixed mix tried traded one kind of
   channel for the other. On silent tuning channels of the paper pipeline the adaptive mix fired 19
   of 24 runs against 17 of 24 (``experiments/results/search_quality_tuning.md``). By default
   (``adapt_when="silent"``) the adapted shares apply only until the unit fires (the best code's
   *reported* value rises above the worst's, as for restarts below), the fixed ones after: on
   firing tuning units the mix for the whole run was slightly lower (0.697 against 0.728).
   **Greedy parents while silent** (``silent_parents=8`` from ``silent_after=300`` codes on,
   deterministic mode): a unit still silent after 300 codes is climbed from its best code (parents
   drawn with weight ``1 / rank ** 8``), a (1 + k) climb on the readout's sub-threshold term, until
   the first spike; on silent tuning channels 20 of 24 runs fired against 19.
4. **Restarts** (deterministic objectives, ``restart_after`` codes): when the best value has gained
   less than ``restart_gain`` (relative) over the last ``restart_after`` codes, the elite restarts
   from the best codes seen that differ from every elite code in more than half the positions and
   score below the stalled level: another basin, when a lineage sits on a plateau it cannot leave
   by local moves (they were added against the one-early-spike trap of the graded readout's old
   whole-run peak; see :mod:`mango.targets.spiking`). The best code seen stays the result.
   By default (``restart_silent=False``) there is no restart while the best code's *reported*
   value (the objective's ``reported``: a spiking target's plain firing rate) is still that of the
   worst code seen, i.e. while a unit has not fired yet and every gain is in the graded readout's
   sub-threshold tie term: that tie term climbs slowly (a few % per 300 codes), and a restart
   would throw away the lineage closest to threshold. The stall clock starts when the unit fires.
   On silent tuning channels of the paper pipeline this fired 17 of 24 runs against 16 of 24
   (``experiments/results/search_quality_tuning.md``); units that fire are unaffected.
5. Optionally (``global_frac > 0``) part of each batch is sampled from a
   :class:`~mango.optimizers.protes.Protes` tensor-train model told every evaluated code
   (off by default: it did not help on the tuning units and its jax compile costs seconds).

Codes already evaluated are never asked again as children. On a **noisy** objective (a live
rig, a Poisson neuron: ``noise="auto"`` reads ``objective.noisy`` at :meth:`bind`), the elite is
ranked by a *shrunk pooled mean* instead of single noisy values, and part of every batch
(``reeval``) re-asks the best-looking elite codes until each has ``max_reeval`` values: the
lucky codes a single measurement put on top are measured again and fall back (racing). The
shrinkage is the normal-normal posterior mean ``(sum + n0 * mu) / (n + n0)`` with ``mu`` the
mean of all values, ``n0 = noise variance / spread of true values`` estimated from the codes
measured more than once (``n0 = 1`` until 5 such codes exist). In noisy mode ``model_frac`` of
each batch are Thompson proposals from a Bayesian additive model of the score
(:class:`~mango.optimizers.additive.AdditiveModel`: one weight per position and value, fitted
to every measurement, so noise is pooled across codes), and the model's prediction replaces the
grand mean as the centre the elite's means shrink toward. Ties count as progress: a
child equal to the best replaces older equals in the elite (neutral drift on the plateaus of a
firing rate). The optimizer only sees codes and scores through ask/tell, so it works unchanged
for a live rig (the natural starts need only the generator).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..shrinkage import noise_variance, shrunk_means
from .additive import AdditiveModel
from .blas import single_blas_thread
from .directional import EmbeddingLinearModel
from .kernel import KernelScreen
from ..spaces import LatentSpace
from .bandit import MoveMix
from .base import Optimizer

__all__ = ["EliteSearch", "load_starts"]

# adaptive window: the prior [successes, trials] of local and scattered point moves (a rate of 1/2 each)
_MOVE_PRIOR = np.array([[1.0, 2.0], [1.0, 2.0]])
# adapt_moves: what a child's move is credited against ("parent": beat its parent, an equal counts 1/4;
# "best": beat the best value at the ask)
_ADAPT_MOVES = ("off", "parent", "best")


def load_starts(starts: Any, space: LatentSpace) -> np.ndarray:
    """Start codes from a list/array ``[m, d]`` or a ``.npy`` file path -> ``int64 [m, d]``."""
    if starts is None:
        return np.zeros((0, space.d), dtype=np.int64)
    if isinstance(starts, (str, Path)):
        path = Path(starts)
        if not path.exists():
            raise ConfigError(f"starts file {str(path)!r} does not exist (give a .npy of int codes [m, {space.d}])")
        starts = np.load(path, allow_pickle=False)
    arr = np.asarray(starts)
    if arr.ndim == 1 and arr.size == space.d:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != space.d:
        raise ConfigError(f"starts must be codes [m, {space.d}], got shape {arr.shape}")
    return space.validate(arr.astype(np.int64))


class EliteSearch(Optimizer):
    """Start codes (natural images, uniform textures), then elite local search (recolour, block and
    point moves with learned position weights, crossover, plateau moves); optional PROTES samples.

    The design (``starts`` + ``uniform_codes``; 40 + 64 codes on the paper's VQ-VAE) is asked first,
    so a budget smaller than the design is spent on it alone.

    Args:
        space: search space (codebook or grid).
        batch_size: codes per ask (``k``, default 50).
        seed: fixes the run.
        elite: how many of the best distinct codes are kept as parents (>= 1).
        max_mutations: most positions changed per local move (>= 1).
        explore: probability that a changed codebook position takes a uniformly random value
            instead of one copied from another elite code, in [0, 1].
        global_frac: fraction of each batch drawn from the PROTES model, in [0, 1).
        position_decay: per-batch decay of the learned position weights toward uniform, in [0, 1].
        grid_step: standard deviation of a grid move as a fraction of ``n`` (grid spaces only).
        recolor: probability of a recolour move (codebook spaces): every position that holds one
            value of the parent takes another value.
        block: probability of a block move (codebook spaces with a 2-d code grid): a random
            rectangle of up to half the grid's side takes one value.
        uniform_codes: codebook spaces: how many uniform codes (one codebook entry at every position,
            a flat texture image) are asked at the start, after ``starts``.
        uniform_pick: how they are chosen: ``"random"`` (a seeded random sample, all in the design) or
            ``"model"`` (deterministic mode with a generator that has ``code_vectors()`` and more
            codebook entries than ``uniform_codes``, else random: ``uniform_random`` of them at random
            in the design, the rest ``uniform_frac`` of each batch by
            a kernel model of the score over the codebook vectors, fitted to the ranks of the uniform
            codes' values so far: the unseen entries with the highest mean + 0.5 posterior SD).
        uniform_random: ``uniform_pick="model"``: uniform codes drawn at random before the model picks (>= 2).
        uniform_frac: ``uniform_pick="model"``: the share of a batch that takes model-picked uniform
            codes (rounded, at least 1), in (0, 1]; 0.36: 18 of a batch of 50.
        block_textures: deterministic mode: probability, in [0, 1], that the value a block or recolour
            move paints is one of the ``texture_top`` uniform codes (flat textures) with the best values
            so far, drawn with weight ``1 / rank``, instead of another elite code's or a random one
            (0: off; default 0.5). A region of a texture the unit likes, painted into the best code,
            composes two images the unit responds to. Noisy mode ignores it (one noisy value per
            texture is no ranking).
        texture_top: how many of the best textures ``block_textures`` draws from (>= 1).
        noise: ``"auto"`` (noisy mode when the bound objective says ``noisy``: rigs), ``"on"``, ``"off"``.
        reeval: noisy mode: fraction of each batch that re-asks elite codes, in [0, 1).
        max_reeval: noisy mode: an elite code is re-asked until it has this many values (>= 1).
        model_frac: noisy mode: fraction of each batch proposed by Thompson samples of the
            additive model, in [0, 1].
        direct_frac: fraction of each batch from directional moves, in [0, 1] (0: off; needs a
            generator with ``code_vectors()``, else off).
        direct_max: most positions a directional move changes (>= 1).
        direct_window: the directional model is fitted to this many last evaluated codes (>= 2).
        direct_reg: ridge strength of the directional model, relative to the mean squared feature norm (> 0).
        restart_after: deterministic mode: codes without a relative gain of ``restart_gain`` after which
            the elite restarts in another lineage (>= 0; 0: never).
        restart_gain: the relative gain of the best value that counts as progress (>= 0).
        restart_silent: also restart while the best code's reported value (``objective.reported``, e.g. the
            plain firing rate under a graded readout) equals the worst code's, i.e. before the unit
            has fired (default False: no restart then; an objective whose ``reported`` is the score
            itself is affected only while every value seen is equal).
        kernel_pool: deterministic mode: screen children with a kernel model (0 or 1: off; else the
            pool holds ``kernel_pool`` candidates per screened child; needs ``code_vectors()``).
        kernel_frac: fraction of each batch (after the design) chosen by the screen, in [0, 1].
        kernel_window: the kernel model is fitted to this many last evaluated codes (>= 2).
        kernel_width: RBF width relative to the median squared distance of the fitted codes (> 0).
        kernel_beta: a candidate's screen value is the predicted mean plus ``kernel_beta`` posterior
            standard deviations (>= 0; 0: the mean alone).
        shift: probability of a grid-shift move (2-d codebook grids), with recolor + block + shift <= 1.
        window: with ``adapt_window=False``: probability that a point move's positions lie in one 3 x 3
            window of a 2-d code grid, in [0, 1].
        adapt_window: adapt that probability during the run (``window`` is then ignored): probability
            matching on the recent success rates of local and scattered point moves (a child better
            than its parent counts 1, an equal one 0.25), kept in [0.1, 0.9].
        adapt_moves: adapt the shares of directional, recolour, block, shift and point moves during the
            run (deterministic codebook spaces, after :meth:`bind`) with
            :class:`~mango.optimizers.bandit.MoveMix`: each kind's share is its fixed share (``direct_frac``,
            ``recolor``, ``block``, ``shift``, the rest point moves) times its recent success rate, where a
            child succeeds when it beats the best value at its ask (``"best"``, the default) or its parent
            (``"parent"``: an equal child counts 1/4); ``"off"``: the fixed shares.
        adapt_when: ``"silent"`` (default): the adapted shares are used only while the best code's reported
            value is still the worst code's (a unit not yet brought to fire, as ``restart_silent``); from the
            first spike on, the fixed shares. ``"always"``: for the whole run.
        silent_parents: deterministic mode: while the unit is silent (as ``adapt_when``) and once
            ``silent_after`` codes have been evaluated, a local or directional move's parent is drawn with
            weight ``1 / rank ** silent_parents`` instead of ``1 / rank`` (> 0; 1: off; the default 8 draws
            the best code about 99.6 % of the time: a (1 + k) climb on the readout's sub-threshold term).
            On the silent tuning channels of the paper SNN, 8 from the start fired 22 of 24 runs against
            19 but left two firing units that start silent lower; from 300 codes on (the default) it
            fired 20 of 24, and units that fire before 300 codes run exactly as with 1
            (``experiments/results/search_quality_tuning.md``).
        silent_after: ``silent_parents`` acts only once this many codes have been evaluated (>= 0; 0: from
            the start; default 300).
        starts: optional start codes evaluated first: ``"natural"`` (natural images through the
            generator's ``encode``, see :mod:`mango.optimizers.starts`; the loop binds the objective,
            and a generator without ``encode`` starts at random), codes ``[m, d]`` (a list), or a
            ``.npy`` path holding them.
    """

    description = ("natural-image and uniform-texture start codes (textures picked by a kernel model over the "
                   "codebook vectors), then elite local search (recolour, "
                   "block (half of them painting one of the best textures so far), grid-shift and 1-3 position moves "
                   "where changes helped; directional moves from a ridge model "
                   "linear in the codebook vectors; while the unit is silent, the moves' shares follow each kind's rate "
                   "of new bests and, after 300 codes, nearly every parent is the best code; "
                   "crossover; plateau moves; no repeats)")

    def __init__(self, space: LatentSpace, batch_size: int = 50, seed: int = 0, *, elite: int = 8,
                 max_mutations: int = 3, explore: float = 0.5, global_frac: float = 0.0,
                 position_decay: float = 0.9, grid_step: float = 0.1, recolor: float = 0.25, block: float = 0.15,
                 uniform_codes: int = 64, noise: str = "auto", reeval: float = 0.25, max_reeval: int = 8,
                 model_frac: float = 0.5, screen: int = 16, model_reg: float = 3.0,
                 direct_frac: float = 0.5, direct_max: int = 8, direct_window: int = 400, direct_reg: float = 1.0,
                 restart_after: int = 300, restart_gain: float = 0.05, restart_silent: bool = False,
                 kernel_pool: int = 0, kernel_frac: float = 0.5, kernel_window: int = 400, kernel_width: float = 0.2,
                 kernel_beta: float = 1.0, shift: float = 0.1, window: float = 0.0, adapt_window: bool = False,
                 uniform_pick: str = "model", uniform_random: int = 10, uniform_frac: float = 0.36,
                 block_textures: float = 0.5, texture_top: int = 8, adapt_moves: str = "best",
                 adapt_when: str = "silent", silent_parents: float = 8.0, silent_after: int = 300,
                 starts: Sequence[Sequence[int]] | str | None = "natural") -> None:
        super().__init__(space, batch_size, seed)
        if int(elite) < 1:
            raise ConfigError(f"elite must be >= 1, got {elite!r}")
        if int(max_mutations) < 1:
            raise ConfigError(f"max_mutations must be >= 1, got {max_mutations!r}")
        if not 0.0 <= float(explore) <= 1.0:
            raise ConfigError(f"explore must be in [0, 1], got {explore!r}")
        if not 0.0 <= float(global_frac) < 1.0:
            raise ConfigError(f"global_frac must be in [0, 1), got {global_frac!r}")
        if not 0.0 <= float(position_decay) <= 1.0:
            raise ConfigError(f"position_decay must be in [0, 1], got {position_decay!r}")
        if not (0.0 <= float(recolor) and 0.0 <= float(block) and float(recolor) + float(block) <= 1.0):
            raise ConfigError(f"recolor and block must be >= 0 with recolor + block <= 1, got {recolor!r}, {block!r}")
        if int(uniform_codes) < 0:
            raise ConfigError(f"uniform_codes must be >= 0, got {uniform_codes!r}")
        if not float(grid_step) > 0:
            raise ConfigError(f"grid_step must be > 0, got {grid_step!r}")
        if noise not in ("auto", "on", "off"):
            raise ConfigError(f"noise must be one of 'auto', 'on', 'off', got {noise!r}")
        if not 0.0 <= float(reeval) < 1.0:
            raise ConfigError(f"reeval must be in [0, 1), got {reeval!r}")
        if int(max_reeval) < 1:
            raise ConfigError(f"max_reeval must be >= 1, got {max_reeval!r}")
        if not 0.0 <= float(model_frac) <= 1.0:
            raise ConfigError(f"model_frac must be in [0, 1], got {model_frac!r}")
        self.noise_mode, self.reeval, self.max_reeval = noise, float(reeval), int(max_reeval)
        if int(screen) < 1:
            raise ConfigError(f"screen must be >= 1, got {screen!r}")
        if not float(model_reg) > 0:
            raise ConfigError(f"model_reg must be > 0 (the ridge strength of the noisy mode's additive model), "
                              f"got {model_reg!r}")
        self.model_frac, self.screen, self.model_reg = float(model_frac), int(screen), float(model_reg)
        if not 0.0 <= float(direct_frac) <= 1.0:
            raise ConfigError(f"direct_frac must be in [0, 1], got {direct_frac!r}")
        if int(direct_max) < 1 or int(direct_window) < 2 or not float(direct_reg) > 0:
            raise ConfigError(f"direct_max must be >= 1, direct_window >= 2 and direct_reg > 0, got "
                              f"{direct_max!r}, {direct_window!r}, {direct_reg!r}")
        self.direct_frac, self.direct_max = float(direct_frac), int(direct_max)
        self.direct_window, self.direct_reg = int(direct_window), float(direct_reg)
        self._direct: EmbeddingLinearModel | None = None
        if int(restart_after) < 0 or not float(restart_gain) >= 0:
            raise ConfigError(f"restart_after must be >= 0 and restart_gain >= 0, got {restart_after!r}, {restart_gain!r}")
        self.restart_after, self.restart_gain = int(restart_after), float(restart_gain)
        if restart_silent not in (True, False):     # also 0 / 1; a string such as "false" is refused
            raise ConfigError(f"restart_silent must be true or false, got {restart_silent!r}")
        self.restart_silent = bool(restart_silent)
        if int(kernel_pool) < 0 or int(kernel_window) < 2 or not float(kernel_width) > 0:
            raise ConfigError(f"kernel_pool must be >= 0, kernel_window >= 2 and kernel_width > 0, got "
                              f"{kernel_pool!r}, {kernel_window!r}, {kernel_width!r}")
        if not 0.0 <= float(kernel_frac) <= 1.0 or not float(kernel_beta) >= 0:
            raise ConfigError(f"kernel_frac must be in [0, 1] and kernel_beta >= 0, got "
                              f"{kernel_frac!r}, {kernel_beta!r}")
        self.kernel_pool, self.kernel_window = int(kernel_pool), int(kernel_window)
        self.kernel_width = float(kernel_width)
        self.kernel_beta, self.kernel_frac = float(kernel_beta), float(kernel_frac)
        self._kernel: KernelScreen | None = None
        if not 0.0 <= float(block_textures) <= 1.0 or int(texture_top) < 1:
            raise ConfigError(f"block_textures must be in [0, 1] and texture_top >= 1, got "
                              f"{block_textures!r}, {texture_top!r}")
        self.block_textures, self.texture_top = float(block_textures), int(texture_top)
        self._tex_top = np.zeros(0, dtype=np.int64)    # the best textures told so far, refreshed each ask
        self._hist: list[tuple[int, float]] = []     # (codes seen, best value) after each tell, since the last restart
        self.restarts = 0
        self._model: AdditiveModel | None = None
        self.noisy = noise == "on"
        self.n_elite, self.max_mutations = int(elite), int(max_mutations)
        self.explore, self.global_frac = float(explore), float(global_frac)
        self.position_decay, self.grid_step = float(position_decay), float(grid_step)
        self.ordered = getattr(space, "kind", "codebook") == "grid"
        self.recolor, self.block = float(recolor), float(block)
        if not (0.0 <= float(shift) and float(recolor) + float(block) + float(shift) <= 1.0):
            raise ConfigError(f"shift must be >= 0 with recolor + block + shift <= 1, got {shift!r} "
                              f"(recolor {recolor!r}, block {block!r})")
        self.shift = float(shift)
        if not 0.0 <= float(window) <= 1.0:
            raise ConfigError(f"window must be in [0, 1], got {window!r}")
        self.window = float(window)
        if adapt_window not in (True, False):       # also 0 / 1; a string such as "false" is refused
            raise ConfigError(f"adapt_window must be true or false, got {adapt_window!r}")
        self.adapt_window = bool(adapt_window)
        if adapt_moves not in _ADAPT_MOVES:
            raise ConfigError(f"adapt_moves must be one of {', '.join(map(repr, _ADAPT_MOVES))}, got {adapt_moves!r}")
        self.adapt_moves = adapt_moves
        if adapt_when not in ("silent", "always"):
            raise ConfigError(f"adapt_when must be one of 'silent', 'always', got {adapt_when!r}")
        self.adapt_when = adapt_when
        if not float(silent_parents) > 0:
            raise ConfigError(f"silent_parents must be > 0, got {silent_parents!r}")
        self.silent_parents = float(silent_parents)
        if int(silent_after) < 0:
            raise ConfigError(f"silent_after must be >= 0, got {silent_after!r}")
        self.silent_after = int(silent_after)
        self._parent_power = 1.0                     # this ask's exponent of the parents' rank weights
        self._mix: MoveMix | None = None            # bound: shares of directional, recolour, block, shift, point
        self._kinds = (self.recolor, self.block, self.shift)   # the local moves' probabilities this ask
        self._arm_of: dict[bytes, tuple[int, float]] = {}      # child -> (move kind, the value it must beat)
        self._last_kind = 4                          # the kind of the last local move (see _local_move)
        if uniform_pick not in ("model", "random"):
            raise ConfigError(f"uniform_pick must be one of 'model', 'random', got {uniform_pick!r}")
        if int(uniform_random) < 2 or not 0.0 < float(uniform_frac) <= 1.0:
            raise ConfigError(f"uniform_random must be >= 2 and uniform_frac in (0, 1], got "
                              f"{uniform_random!r}, {uniform_frac!r}")
        self.uniform_pick, self.uniform_random, self.uniform_frac = uniform_pick, int(uniform_random), float(uniform_frac)
        self._u_model: KernelScreen | None = None    # bound: a kernel model over codebook vectors
        self._u_picked = 0                           # uniform codes picked by the model so far
        self._move_stats = _MOVE_PRIOR.copy()        # [successes, trials] of local, scattered point moves
        self._move_kind: dict[bytes, int] = {}
        self.rng = np.random.default_rng(self.seed)
        # uniform codes (one codebook entry at every position: a flat texture image), a seeded sample
        n_u = 0 if self.ordered else min(int(uniform_codes), int(space.n))
        drawn = self.rng.choice(int(space.n), size=n_u, replace=False) if n_u else np.zeros(0, dtype=np.int64)
        # uniform_pick="random" (and noisy mode, or no code vectors): all of them, in index order
        self._uniform = np.repeat(np.sort(drawn).astype(np.int64)[:, None], space.d, axis=1)
        # uniform_pick="model": the first uniform_random of the draw, then model picks
        self._u_first = np.repeat(drawn[:self.uniform_random].astype(np.int64)[:, None], space.d, axis=1)
        self.natural = isinstance(starts, str) and starts == "natural"
        # instance flag: the loop calls bind(objective) (natural starts, noise mode, code vectors)
        self.needs_objective = self.natural or noise == "auto" or self.direct_frac > 0 or self.kernel_pool > 1
        self._starts = load_starts(None if self.natural else starts, space)
        self._n_global = int(round(self.global_frac * self.k))
        self._protes = None
        if self._n_global > 0:
            from .protes import Protes

            self._protes = Protes(space, batch_size=self._n_global, seed=self.seed,
                                  k_top=min(5, self._n_global))
        d = space.d
        self.elite_I = np.zeros((0, d), dtype=np.int64)
        self.elite_y = np.zeros(0)
        self.pos_w = np.ones(d)
        self._seen_rows: list[np.ndarray] = []
        self._index: dict[bytes, int] = {}          # every evaluated code -> its row of _seen_rows / _sum / _cnt
        self._sum: list[float] = []
        self._cnt: list[int] = []
        self._ss: list[float] = []
        self._pending: dict[bytes, tuple[float, np.ndarray]] = {}  # child -> (parent value, changed positions)
        self._next_start = 0

    def bind(self, objective: Any) -> None:
        """With ``starts="natural"``: encode natural images with the objective's generator (once)."""
        super().bind(objective)
        if self.noise_mode == "auto":
            self.noisy = bool(getattr(objective, "noisy", False))
        if self.natural and len(self._starts) == 0:
            from .starts import natural_start_codes

            codes = natural_start_codes(getattr(objective, "generator", None))
            if codes is not None and codes.shape[1] == self.space.d:
                self._starts = self.space.validate(codes)
        vectors = getattr(getattr(objective, "generator", None), "code_vectors", None)
        picks = self.uniform_pick == "model" and len(self._u_first) < len(self._uniform) < int(self.space.n)
        if (self.direct_frac > 0 or self.kernel_pool > 1 or picks) and not self.ordered and callable(vectors):
            V = np.asarray(vectors(), dtype=np.float64)
            if V.ndim == 2 and V.shape[0] == int(self.space.n):
                if picks:
                    self._u_model = KernelScreen(V, 1, window=int(self.space.n), width=0.2)
                if self.direct_frac > 0:
                    self._direct = EmbeddingLinearModel(V, self.space.d, reg=self.direct_reg, window=self.direct_window)
                if self.kernel_pool > 1:
                    self._kernel = KernelScreen(V, self.space.d, window=self.kernel_window, width=self.kernel_width)
        if self.adapt_moves != "off" and not self.ordered and not self.noisy and self._mix is None:
            dfrac = self.direct_frac if self._direct is not None else 0.0
            r, b, sh = self.recolor, self.block, self.shift
            self._mix = MoveMix(np.array([dfrac, *((1 - dfrac) * np.array([r, b, sh, 1 - r - b - sh]))]))

    # -- asking -------------------------------------------------------------------------
    @single_blas_thread
    def _ask(self, limit: int | None = None) -> np.ndarray:
        k = self.k if limit is None else max(1, min(self.k, int(limit)))
        rows: list[np.ndarray] = []
        batch_seen: set[bytes] = set()
        # the uniform codes told so far (entries, mean values), once per ask: the model picks and the best
        # textures that block and recolour moves paint both read them (deterministic codebook spaces)
        textures = (self._seen_textures() if (self._picking() or self.block_textures > 0)
                    and not self.noisy and not self.ordered else None)
        if textures is not None and self.block_textures > 0 and len(self.elite_y):
            levels, vals = textures
            self._tex_top = levels[np.argsort(-vals, kind="stable")[:self.texture_top]]

        def add(row: np.ndarray, parent: tuple[float, np.ndarray] | None) -> bool:
            key = row.tobytes()
            if key in self._index or key in batch_seen:
                return False
            batch_seen.add(key)
            rows.append(row)
            if parent is not None:
                self._pending[key] = parent
            return True

        if self.noisy and len(self.elite_y):
            for row in self._reasks(int(round(self.reeval * k))):
                rows.append(row)
                batch_seen.add(row.tobytes())
            for row, parent in self._thompson(min(int(round(self.model_frac * k)), k - len(rows)), set(batch_seen)):
                add(row, parent)
        design = self._design()
        base = k                         # the slots directional moves take a direct_frac share of
        direct_frac = self.direct_frac
        self._kinds = (self.recolor, self.block, self.shift)
        silent = (self._mix is not None or self.silent_parents != 1.0) and not self.noisy and self._at_floor()
        self._parent_power = (self.silent_parents if silent and len(self._seen_rows) >= self.silent_after
                              else 1.0)
        if self._mix is not None and (self.adapt_when == "always" or silent):
            p = self._mix.shares()      # adapt_moves: this batch's shares of the move kinds
            direct_frac = float(p[0])
            if p[1:].sum() > 0:         # else (direct_frac = 1) the few local moves keep the fixed kinds
                loc = p[1:] / p[1:].sum()
                self._kinds = (float(loc[0]), float(loc[1]), float(loc[2]))
        if self._screening(design):
            for row, parent in self._screened(int(round(self.kernel_frac * k)), set(batch_seen)):
                add(row, parent)
            base = k - len(rows)
        if self._direct is not None and len(self.elite_y) and self._next_start >= len(design):
            m = min(int(round(direct_frac * base)), k - len(rows))
            for row, parent in self._directional(m, set(batch_seen)):
                if add(row, parent) and self._mix is not None:
                    self._credit_against(row, 0, parent[0])
        while self._next_start < len(design) and len(rows) < k:
            add(design[self._next_start].copy(), None)
            self._next_start += 1
        m = min(max(1, int(round(self.uniform_frac * k))), len(self._uniform) - len(self._u_first) - self._u_picked,
                k - len(rows))
        if self._picking() and self._next_start >= len(design) and m > 0 and textures is not None:
            levels, vals = textures
            if len(levels) >= len(self._u_first):    # the random textures of the design have been told
                for level in self._uniform_order(levels, vals):
                    if m <= 0:
                        break
                    if add(np.full(self.space.d, level, dtype=np.int64), None):
                        self._u_picked += 1
                        m -= 1
        if len(rows) < k and self._protes is not None:  # global samples: global_frac * k rows
            for row in self._protes.ask():
                if len(rows) >= k:
                    break
                add(np.asarray(row, dtype=np.int64), None)
        tries = 0
        while len(rows) < k and tries < 20 * k:
            tries += 1
            if len(self.elite_y) == 0:
                add(self.space.sample(self.rng, 1)[0], None)
            else:
                child, parent = self._local_move()
                if add(child, parent) and self._mix is not None:
                    self._credit_against(child, self._last_kind, parent[0])
        while len(rows) < k:  # a tiny space is exhausted around the elite: fall back to random codes
            row = self.space.sample(self.rng, 1)[0]
            if not add(row, None) and len(self._index) + len(batch_seen) >= self._space_size():
                rows.append(row)  # everything has been seen: repeats are all that is left
        return np.stack(rows[:k])

    def _screening(self, design: np.ndarray) -> bool:
        """Deterministic mode with a kernel model that screens (``kernel_frac > 0``), after the design:
        fit it; True when it could be fitted."""
        if (self._kernel is None or self.noisy or self.kernel_frac <= 0 or not len(self.elite_y)
                or self._next_start < len(design)):
            return False
        seen = np.stack(self._seen_rows[-self.kernel_window:])
        vals = np.asarray(self._sum[-self.kernel_window:]) / np.maximum(np.asarray(self._cnt[-self.kernel_window:]), 1)
        return self._kernel.fit(seen, vals)

    def _screened(self, m: int, taken: set[bytes]) -> list[tuple[np.ndarray, tuple[float, np.ndarray] | None]]:
        """``m`` children chosen by the kernel model's prediction from a pool of ``kernel_pool * m``
        candidates (directional moves for ``direct_frac`` of the pool, local moves for the rest)."""
        if m <= 0:
            return []
        pool_n = self.kernel_pool * m
        pool: list[tuple[np.ndarray, tuple[float, np.ndarray] | None]] = []
        pool_keys = set(taken)
        if self._direct is not None:
            pool += self._directional(int(round(self.direct_frac * pool_n)), pool_keys)
        tries = 0
        while len(pool) < pool_n and tries < 20 * pool_n:
            tries += 1
            child, parent = self._local_move()
            key = child.tobytes()
            if key in self._index or key in pool_keys:
                continue
            pool_keys.add(key)
            pool.append((child, parent))
        if not pool:
            return []
        mean, sd = self._kernel.predict(np.stack([c for c, _ in pool]), std=True)
        pred = mean + self.kernel_beta * sd
        order = np.argsort(-pred, kind="stable")[:m]
        for i in order:
            taken.add(pool[i][0].tobytes())
        return [pool[i] for i in order]

    def _reasks(self, m: int) -> list[np.ndarray]:
        """Noisy mode: up to ``m`` elite codes to measure again, best-looking first, each until it
        has ``max_reeval`` values."""
        out = []
        for row in self.elite_I:
            if len(out) >= m:
                break
            if self._cnt[self._index[row.tobytes()]] < self.max_reeval:
                out.append(row.copy())
        return out

    def _thompson(self, m: int, taken: set[bytes]) -> list[tuple[np.ndarray, tuple[float, np.ndarray] | None]]:
        """Noisy mode: ``m`` proposals, one per posterior sample of the additive model: the best,
        under that sample, of ``screen`` local moves from the elite, the sample's argmax code and
        the elite parent moved to the sample's best values at its 1-3 most promising positions.
        Codes already seen (or in ``taken``) are skipped; returns ``(code, parent)`` pairs."""
        model = self._model
        if m <= 0 or model is None or len(model.codes) < 2 or not len(self.elite_I):
            return []
        W = model.sample_weights(self.rng, m)
        d = np.arange(self.space.d)
        out = []
        for w in W:
            cands = [self._local_move() for _ in range(self.screen)]
            best = w.argmax(1).astype(np.int64)
            j = self._pick_parent()
            parent = self.elite_I[j]
            gain = w[d, best] - w[d, parent]
            pos = np.sort(np.argsort(-gain)[:int(self.rng.integers(1, 4))])
            child = parent.copy()
            child[pos] = best[pos]
            cands += [(best, None), (child, (float(self.elite_y[j]), pos))]
            scores = [float(w[d, c].sum()) for c, _ in cands]
            for i in np.argsort(scores)[::-1]:
                key = cands[i][0].tobytes()
                if key not in self._index and key not in taken:
                    taken.add(key)
                    out.append(cands[i])
                    break
        return out

    def _directional(self, m: int, taken: set[bytes]) -> list[tuple[np.ndarray, tuple[float, np.ndarray]]]:
        """Up to ``m`` children of elite parents moved along the embedding-linear model's predicted gains
        (fitted to each code's value, or mean in noisy mode): ``1..direct_max`` positions (drawn in proportion to their best gain)
        each take one of their three best-predicted values. Returns ``(code, parent)`` pairs."""
        model = self._direct
        if m <= 0 or model is None or len(self._seen_rows) < 2:
            return []
        if model.n_added < len(self._seen_rows):
            model.add_codes(np.stack(self._seen_rows[model.n_added:]))
        if not model.fit(np.asarray(self._sum) / np.maximum(np.asarray(self._cnt), 1)):
            return []
        best: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # parent -> (3 best values [d, 3], best gain [d])
        out: list[tuple[np.ndarray, tuple[float, np.ndarray]]] = []
        rows = np.arange(self.space.d)[:, None]
        for _ in range(4 * m):
            if len(out) >= m:
                break
            j = self._pick_parent()
            if j not in best:
                G = model.gains(self.elite_I[j])
                top = np.argpartition(-G, 2, axis=1)[:, :3]
                top = np.take_along_axis(top, np.argsort(-G[rows, top], axis=1), axis=1)
                best[j] = (top, np.maximum(G[rows[:, 0], top[:, 0]], 0.0))
            top, g = best[j]
            if not (g > 0).any():
                continue
            mmax = min(self.direct_max, int((g > 0).sum()))
            pm = 1.0 / np.arange(1, mmax + 1)                      # P(m) ~ 1/m: mostly short steps, some long
            mm = int(self.rng.choice(np.arange(1, mmax + 1), p=pm / pm.sum()))
            pos = np.sort(self.rng.choice(self.space.d, size=mm, replace=False, p=g / g.sum()))
            child = self.elite_I[j].copy()
            child[pos] = top[pos, self.rng.integers(0, 3, size=mm)]
            key = child.tobytes()
            if key in self._index or key in taken:
                continue
            taken.add(key)
            out.append((child, (float(self.elite_y[j]), pos)))
        return out

    def _picking(self) -> bool:
        """True when the uniform codes after the first ``uniform_random`` are picked by the model."""
        return self._u_model is not None and not self.noisy

    def _design(self) -> np.ndarray:
        """Codes asked before any search: the start codes, then the uniform codes (the random ones)."""
        uniform = self._u_first if self._picking() else self._uniform
        return np.concatenate([self._starts, uniform]) if len(uniform) else self._starts

    def _seen_textures(self) -> tuple[np.ndarray, np.ndarray]:
        """The uniform codes evaluated so far, in the order first told: their codebook entries ``int64 [u]``
        and mean values ``float64 [u]``."""
        if not self._seen_rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        seen = np.stack(self._seen_rows)
        idx = np.flatnonzero(seen.min(1) == seen.max(1))
        return seen[idx, 0].astype(np.int64), np.asarray(self._sum)[idx] / np.asarray(self._cnt)[idx]

    def _uniform_order(self, seen: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """The codebook entries of no evaluated uniform code (``seen``, with values ``vals``), best first
        by the kernel model's mean + 0.5 SD (fitted to the ranks of ``vals``), in random order when it
        cannot be fitted: ``int64 [m]``."""
        free = np.ones(int(self.space.n), dtype=bool)
        free[seen] = False
        rest = np.flatnonzero(free)
        ranks = np.argsort(np.argsort(vals, kind="stable"), kind="stable").astype(np.float64)
        if not len(rest) or not self._u_model.fit(seen[:, None], ranks):
            return self.rng.permutation(rest)
        mean, sd = self._u_model.predict(rest[:, None], std=True)
        return rest[np.argsort(-(mean + 0.5 * sd), kind="stable")]

    def _space_size(self) -> float:
        return float(self.space.n) ** self.space.d

    def _rank_draw(self, n: int, power: float = 1.0) -> int:
        """An index in ``[0, n)`` drawn with weight ``1 / rank ** power`` (rank = index + 1: the first
        most often; ``power`` > 0)."""
        rank = np.arange(n) + 1.0
        w = 1.0 / rank if power == 1.0 else rank ** -power
        return int(self.rng.choice(n, p=w / w.sum()))

    def _pick_parent(self) -> int:
        """Index of an elite parent, drawn with weight ``1 / rank`` (the best most often; ``1 / rank ** p``
        with ``p = silent_parents`` while the unit is silent, see :meth:`_ask`)."""
        return self._rank_draw(len(self.elite_y), self._parent_power)

    def _local_move(self) -> tuple[np.ndarray, tuple[float, np.ndarray]]:
        """A child of a rank-weighted elite parent: a point, recolour or block move."""
        ne = len(self.elite_y)
        j = self._pick_parent()
        parent = self.elite_I[j]
        child = parent.copy()
        r = self.rng.random()
        p_recolor, p_block, p_shift = self._kinds
        self._last_kind = 4                        # point (MoveMix's kinds: 1 recolour, 2 block, 3 shift, 4 point)
        if not self.ordered and r >= 1.0 - p_shift and len(self.space.shape) == 2:
            self._last_kind = 3
            # shift: the whole grid moves by up to 2 positions, the vacated rows/columns repeat the edge
            h, wd = self.space.shape
            while True:
                dy, dx = (int(v) for v in self.rng.integers(-2, 3, size=2))
                if dy or dx:
                    break
            g = parent.reshape(h, wd)
            yy = np.clip(np.arange(h) - dy, 0, h - 1)
            xx = np.clip(np.arange(wd) - dx, 0, wd - 1)
            child = g[yy][:, xx].reshape(-1)      # fancy indexing: a new array, not a view of the parent
            # the changed positions; none for a uniform parent, whose shift is the parent itself: a code
            # already evaluated, which ask never asks again, so its empty credit is never told
            pos = np.nonzero(child != parent)[0]
        elif not self.ordered and r < p_recolor:
            self._last_kind = 1
            # recolour: every position holding the value at a random position takes another value
            a = parent[int(self.rng.integers(self.space.d))]
            b = self._block_value(parent, int(self.rng.integers(self.space.d)), ne)
            pos = np.nonzero(parent == a)[0]
            child[pos] = b
        elif not self.ordered and r < p_recolor + p_block and len(self.space.shape) == 2:
            self._last_kind = 2
            # block: a random rectangle of the code grid takes one value
            h, wd = self.space.shape
            bh, bw = int(self.rng.integers(1, h // 2 + 1)), int(self.rng.integers(1, wd // 2 + 1))
            y0, x0 = int(self.rng.integers(h - bh + 1)), int(self.rng.integers(wd - bw + 1))
            grid = np.arange(self.space.d).reshape(h, wd)
            pos = grid[y0:y0 + bh, x0:x0 + bw].ravel()
            child[pos] = self._block_value(parent, int(pos[0]), ne)
        else:
            d, n = self.space.d, self.space.n
            mmax = min(self.max_mutations, d)
            pm = 1.0 / np.arange(1, mmax + 1)
            m = int(self.rng.choice(np.arange(1, mmax + 1), p=pm / pm.sum()))
            pw = self.pos_w / self.pos_w.sum()
            p_local = self.window
            if self.adapt_window:      # probability matching on the two kinds' success rates, kept in [0.1, 0.9]
                rate = self._move_stats[:, 0] / self._move_stats[:, 1]
                p_local = float(np.clip(rate[0] / rate.sum(), 0.1, 0.9))
            local = p_local > 0 and len(self.space.shape) == 2 and self.rng.random() < p_local
            if local:
                # local: the positions lie in the 3 x 3 window around one drawn by the position weights
                h, wd = self.space.shape
                cy, cx = divmod(int(self.rng.choice(d, p=pw)), wd)
                near = np.arange(d).reshape(h, wd)[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2].ravel()
                pn = pw[near] / pw[near].sum()
                pos = self.rng.choice(near, size=min(m, len(near)), replace=False, p=pn)
            else:
                pos = self.rng.choice(d, size=m, replace=False, p=pw)
            for p in pos:
                if self.ordered:
                    step = int(np.rint(self.rng.normal(0.0, max(1.0, self.grid_step * n))))
                    child[p] = int(np.clip(parent[p] + (step if step != 0 else self.rng.choice((-1, 1))), 0, n - 1))
                else:
                    child[p] = self._new_value(parent, int(p), ne)
            if self.adapt_window:
                self._move_kind[child.tobytes()] = 0 if local else 1
        return child, (float(self.elite_y[j]), np.sort(pos))

    def _credit_against(self, child: np.ndarray, kind: int, parent_value: float) -> None:
        """adapt_moves: remember the move kind of an asked child and the value it must beat (its parent's,
        or the best so far)."""
        ref = parent_value if self.adapt_moves == "parent" else float(self.best_y)
        self._arm_of[child.tobytes()] = (kind, ref)

    def _block_value(self, parent: np.ndarray, p: int, ne: int) -> int:
        """The value of a block or recolour move: with probability ``block_textures`` one of the
        ``texture_top`` best textures measured so far (rank-weighted), else :meth:`_new_value`."""
        if len(self._tex_top) and self.rng.random() < self.block_textures:
            return int(self._tex_top[self._rank_draw(len(self._tex_top))])
        return self._new_value(parent, p, ne)

    def _new_value(self, parent: np.ndarray, p: int, ne: int) -> int:
        """A codebook value for position ``p``: another elite code's (crossover) or a uniform one."""
        if ne > 1 and self.rng.random() >= self.explore:
            donor = self.elite_I[int(self.rng.integers(ne))]
            if donor[p] != parent[p]:
                return int(donor[p])
        return int(self.rng.integers(self.space.n))

    # -- telling ------------------------------------------------------------------------
    @single_blas_thread
    def _tell(self, I: np.ndarray, y: np.ndarray) -> None:
        credit = np.zeros(self.space.d)
        for row, val in zip(I, y):
            key = row.tobytes()
            if key not in self._index:
                self._index[key] = len(self._seen_rows)
                self._seen_rows.append(row.copy())
                self._sum.append(0.0)
                self._cnt.append(0)
                self._ss.append(0.0)
            i = self._index[key]
            self._sum[i] += float(val)
            self._ss[i] += float(val) ** 2
            self._cnt[i] += 1
            arm = self._arm_of.pop(key, None)
            if arm is not None and self._mix is not None:
                self._mix.record(arm[0], 1.0 if val > arm[1] else
                                 0.25 if val == arm[1] and self.adapt_moves == "parent" else 0.0)
            parent = self._pending.pop(key, None)
            if parent is None:
                continue
            gain = 1.0 if val > parent[0] else 0.25 if val == parent[0] else 0.0   # better / equal / worse child
            kind = self._move_kind.pop(key, None)
            if kind is not None:
                self._move_stats[kind] += (gain, 1.0)
            if gain > 0:
                credit[parent[1]] += gain / len(parent[1])
        self._pending.clear()
        self._arm_of.clear()
        if self._mix is not None:
            self._mix.step()
        if self.adapt_window:
            self._move_kind.clear()
            self._move_stats = 0.95 * self._move_stats + 0.05 * _MOVE_PRIOR
        self.pos_w = self.position_decay * self.pos_w + (1 - self.position_decay) * 1.0 + credit
        if self.noisy:
            self._noisy_elite()
        else:
            self._plain_elite(I, y)
            self._maybe_restart()
        if self._protes is not None:
            self._protes.tell(I, y)

    def _fit_model(self) -> np.ndarray | None:
        """Noisy mode: refit the additive model to every code's mean; its prediction per seen code
        (``None`` without a model)."""
        if not self.noisy or self.model_frac <= 0 or not self._seen_rows:
            return None
        if self._model is None:
            self._model = AdditiveModel(self.space.d, int(self.space.n), reg=self.model_reg)
        known = len(self._model.codes)
        if len(self._seen_rows) > known:
            self._model.add_codes(np.stack(self._seen_rows[known:]))
        cnt = np.asarray(self._cnt, dtype=np.float64)
        means = np.asarray(self._sum) / cnt
        var = noise_variance(self._sum, self._ss, self._cnt)
        self._model.fit(means, cnt, float(np.var(means)) if var is None else var)
        return self._model.predict(np.stack(self._seen_rows))

    def _noisy_elite(self) -> None:
        post, _ = shrunk_means(self._sum, self._ss, self._cnt, prior=self._fit_model())
        top = np.argsort(-post, kind="stable")[:self.n_elite]
        self.elite_I = np.stack([self._seen_rows[i] for i in top])
        self.elite_y = post[top]

    def _maybe_restart(self) -> None:
        """Deterministic mode, ``restart_after > 0``: when the best value gained less than ``restart_gain``
        (relative) over the last ``restart_after`` codes of the search (after the design), the elite
        restarts from the best seen codes that differ from every current elite code in more than half
        the positions and score clearly below the stalled level (``restart_gain`` below it): another
        lineage in another basin. The best code seen stays the recommendation."""
        if not self.restart_after or self._next_start < len(self._design()):
            return
        if not self.restart_silent and self._at_floor():
            return
        q = len(self._seen_rows)
        self._hist.append((q, float(self.best_y)))
        old = [b for n, b in self._hist if n <= q - self.restart_after]
        if not old:
            return
        if float(self.best_y) - old[-1] > self.restart_gain * abs(old[-1]):
            return
        seen, vals = np.stack(self._seen_rows), np.asarray(self._sum)
        level = old[-1] - self.restart_gain * abs(old[-1])       # below the stalled level: another basin
        far = ((seen[:, None, :] != self.elite_I[None, :, :]).sum(-1) > self.space.d // 2).all(1) & (vals < level)
        if not far.any():
            return
        vals = vals[far]
        order = np.argsort(-vals, kind="stable")[:self.n_elite]
        self.elite_I, self.elite_y = seen[far][order].copy(), vals[order].copy()
        self._hist = [(q, float(self.best_y))]
        self.restarts += 1

    def _at_floor(self) -> bool:
        """Whether the best value's *reported* quantity (the objective's ``reported``: a spiking target's
        plain firing rate) is still that of the worst code seen: every gain so far is in the graded
        readout's sub-threshold tie term (a unit not yet brought to fire). Identity ``reported``: only
        when every value seen is equal. Deterministic mode (as :meth:`_maybe_restart`): one value per code
        seen, so ``_sum`` holds the values."""
        rep = getattr(getattr(self, "objective", None), "reported", None)    # set by bind()
        if not callable(rep) or not self._sum:
            return False
        lo_hi = np.asarray(rep(np.array([min(self._sum), float(self.best_y)])), dtype=np.float64)
        return bool(lo_hi[1] <= lo_hi[0])

    def _plain_elite(self, I: np.ndarray, y: np.ndarray) -> None:
        # elite: best distinct codes; a newcomer ties ahead of older equals (plateau moves)
        allI = np.concatenate([I, self.elite_I])
        ally = np.concatenate([y, self.elite_y])
        order = np.lexsort((np.arange(len(ally)), -ally))
        keep, keys = [], set()
        for i in order:
            key = allI[i].tobytes()
            if key in keys:
                continue
            keys.add(key)
            keep.append(i)
            if len(keep) == self.n_elite:
                break
        self.elite_I, self.elite_y = allI[keep].copy(), ally[keep].copy()

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        seen = np.stack(self._seen_rows) if self._seen_rows else np.zeros((0, self.space.d), dtype=np.int64)
        return {**self._base_state(), "rng": self.rng.bit_generator.state,
                "elite_I": self.elite_I, "elite_y": self.elite_y, "pos_w": self.pos_w,
                "seen": seen, "next_start": self._next_start, "noisy": self.noisy,
                "hist": np.asarray(self._hist, dtype=np.float64).reshape(-1, 2), "restarts": self.restarts,
                "move_stats": self._move_stats, "uniform_picked": self._u_picked,
                "move_mix": None if self._mix is None else self._mix.state(),
                "sums": np.asarray(self._sum, dtype=np.float64), "sumsq": np.asarray(self._ss, dtype=np.float64),
                "counts": np.asarray(self._cnt, dtype=np.int64),
                "protes": None if self._protes is None else self._protes.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        self.rng.bit_generator.state = state["rng"]
        d = self.space.d
        self.elite_I = np.asarray(state["elite_I"], dtype=np.int64).reshape(-1, d)
        self.elite_y = np.asarray(state["elite_y"], dtype=np.float64)
        self.pos_w = np.asarray(state["pos_w"], dtype=np.float64)
        seen = np.asarray(state["seen"], dtype=np.int64).reshape(-1, d)
        self._seen_rows = [r.copy() for r in seen]
        self._index = {r.tobytes(): i for i, r in enumerate(self._seen_rows)}
        m = len(self._seen_rows)
        self._sum = [float(v) for v in np.asarray(state.get("sums", np.zeros(m)), dtype=np.float64)]
        self._ss = [float(v) for v in np.asarray(state.get("sumsq", np.zeros(m)), dtype=np.float64)]
        self._cnt = [int(v) for v in np.asarray(state.get("counts", np.ones(m)), dtype=np.int64)]
        self.noisy = bool(state.get("noisy", self.noisy))
        self._next_start = int(state["next_start"])
        self._hist = [(int(n), float(b)) for n, b in np.asarray(state.get("hist", np.zeros((0, 2)))).reshape(-1, 2)]
        self.restarts = int(state.get("restarts", 0))
        self._move_stats = np.asarray(state.get("move_stats", _MOVE_PRIOR), dtype=np.float64).reshape(2, 2)
        self._move_kind.clear()
        if self._mix is not None and state.get("move_mix") is not None:
            self._mix.load(state["move_mix"])
        self._arm_of.clear()
        self._model = None
        self._u_picked = int(state.get("uniform_picked", 0))
        if self._direct is not None:
            self._direct.reset()  # refilled from the evaluated codes at the next ask
        self._fit_model()  # the model is a function of the codes and values: rebuilt, not stored
        self._pending.clear()
        if self._protes is not None:
            self._protes.load_state_dict(state["protes"])
