"""The noise-aware closed loop with a live rig: blocks = generations, repeats, re-tests, references.

It is not a loop of its own: :class:`RigPolicy` is an evaluation policy of the
one loop kernel, :func:`mango.loop.run_loop`, which asks, journals, tells and
counts the budget (in presentations). Per generation ``g`` (block id ``g``)::

    I = optimizer.ask(limit)                             candidates  int64 [k, d]   (kernel)
    block = candidates (+ current best every ``retest_every`` blocks) (+ reference images)
            each shown ``repeats`` times in a seeded random order
    log "sent" (fsync)  ->  rig.present(block)  ->  log "response" with the answered attempt (fsync)
    y = mean over each candidate's repeats of the selected channel(s)
    journal row (mango.journal); optimizer.tell(I, y)                                (kernel)

The recommended stimulus is the code with the best **mean over all its
presentations** (re-tests add presentations, so a lucky trial regresses to its
mean), never the single luckiest trial. Because a mean over ``repeats`` trials
chosen as the maximum of many is still biased upwards (the winner's curse), the
last block is a *confirmation block*: the ``confirm_top`` codes with the best
means are shown ``confirm_repeats`` more times each (budget reserved from the
start), and the recommendation is the best mean among codes with at least
``repeats + confirm_repeats`` presentations. That mean (``best_mean``, the
*selection* mean) was used to choose the code, so it is still biased upwards.
The value reported is therefore estimated from presentations not used to choose:
after the confirmation block a *hold-out block* shows only the chosen code,
``holdout_repeats`` times plus whatever budget no search block could use (budget
reserved from the start, journaled and resumed like every block), and ``holdout_mean +- holdout_sem (holdout_n)`` come from those
presentations alone; they never change the choice. Reference images (user-given, fixed) are
shown in every block; their per-block means track drift and are reported.

Crash safety: ``run_dir/presentations.jsonl`` gets every block *before* it is sent
and every response *before* the optimizer sees it (flush + fsync; a torn last line
is cut on open). Restarting with the same arguments replays: the optimizer is
asked again (same seed) and told the logged values; a block whose response is
logged is never sent again; a block that was sent but not answered is sent again.
The kernel's folder lock refuses a second process on the same ``run_dir``; damage to
``presentations.jsonl`` other than a torn last line raises (naming the line), never cuts.
``presentations`` in the budget count every presentation (candidates, re-tests,
references).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MangoError, check_int
from ..journal import JournalRow, cut_torn_tail, read_jsonl
from ..loop import LoopState, Step, build_optimizer, check_budget, run_loop
from ..optimizers.base import Optimizer
from ..channels import select_channels
from ..imaging import display_uint8
from ..results import write_final_files
from ..shrinkage import shrunk_means
from .protocol import Block, Reply, RigError

__all__ = ["closed_loop", "RigPolicy", "RigRunResult", "select_channels", "stimulus_images", "PresentationLog",
           "BlockEvent", "ID_STRIDE"]

log = logging.getLogger(__name__)
ID_STRIDE = 100_000  # image id = block * ID_STRIDE + index in block


class PresentationLog:
    """``presentations.jsonl``: one JSON line per sent block / received response, fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sent: dict[int, dict[str, Any]] = {}
        self.responses: dict[int, dict[str, Any]] = {}
        self._read()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _read(self) -> None:
        """Read the log; cut a torn last line (with a warning). Damage before the last line raises
        :class:`MangoError` naming the line, and nothing is cut."""
        recs, good, size = read_jsonl(self.path)
        for lineno, rec in recs:
            ev = rec.get("ev") if isinstance(rec, dict) else None
            block = rec.get("block") if isinstance(rec, dict) else None
            if ev not in ("sent", "response") or not isinstance(block, int) or isinstance(block, bool) or block < 0:
                raise MangoError(f"{self.path} is damaged at line {lineno}: not a 'sent' or 'response' record "
                                 "of a block; nothing was cut: restore the file or start a new run folder")
            if ev == "response":
                if block in self.responses:
                    raise MangoError(f"{self.path}: block {block} has two responses (corrupt log, line {lineno})")
                self.responses[block] = rec
            else:
                self.sent[block] = rec
        cut_torn_tail(self.path, good, size)

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record and make it durable before returning."""
        self._fh.write(json.dumps(rec, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        (self.sent if rec["ev"] == "sent" else self.responses)[int(rec["block"])] = rec

    def close(self) -> None:
        self._fh.close()


@dataclass
class BlockEvent:
    """What a callback sees after each block."""

    block: int
    n_candidates: int
    candidate_means: np.ndarray
    presentations: int
    budget: int
    best_mean: float
    best_n: int
    replayed: bool
    reference_means: np.ndarray


@dataclass
class RigRunResult:
    """Outcome of :func:`closed_loop`.

    Attributes:
        best_code: ``int64 [d]``, the code with the best mean response over its presentations.
        best_mean: that mean (selected channel(s)); ``best_n`` presentations, ``best_sem`` its standard error.
        best_image: ``uint8 [H, W, C]`` of the best code.
        codes, means, counts: every code shown (``[m, d]``), its mean response and presentation count.
        block_best_mean: ``[G]`` best mean after each block; ``block_presentations``: ``[G]`` cumulative count.
        reference_means: ``[G, r]`` each reference image's mean response per block (drift).
        presentations: total presentations; ``blocks``: number of blocks; ``ignored``: messages dropped.
        batch_size: candidates the optimizer asked per block (its ``k``).
        holdout_mean, holdout_sem, holdout_n: the unbiased estimate of ``best_code``'s mean response,
            from the hold-out block only (presentations not used to choose the code); ``nan``/0
            when no hold-out block ran (``holdout_repeats=0`` or too small a budget).
        holdout_values: ``float64 [holdout_n]`` the hold-out responses themselves.
    """

    best_code: np.ndarray
    best_mean: float
    best_n: int
    best_sem: float
    best_image: np.ndarray
    codes: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    block_best_mean: np.ndarray
    block_presentations: np.ndarray
    reference_means: np.ndarray
    presentations: int
    blocks: int
    seconds: float
    replayed_blocks: int = 0
    ignored: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    holdout_mean: float = float("nan")
    holdout_sem: float = float("nan")
    holdout_n: int = 0
    holdout_values: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def holdout_ci95(self) -> tuple[float, float]:
        """95 % t-interval of the hold-out mean (``n - 1`` degrees of freedom): with the usual 10 presentations
        the sample SD is itself noisy, and ``mean +- 1.96 sem`` would be too narrow (t = 2.26 at n = 10);
        ``(nan, nan)`` below two presentations."""
        if self.holdout_n < 2 or not np.isfinite(self.holdout_sem):
            return float("nan"), float("nan")
        from scipy.stats import t

        half = float(t.ppf(0.975, self.holdout_n - 1)) * self.holdout_sem
        return self.holdout_mean - half, self.holdout_mean + half

    @property
    def selection_mean(self) -> float:
        """``best_mean``: the mean over the presentations used to choose ``best_code`` (biased upwards)."""
        return self.best_mean

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (``result.json``)."""
        order = np.argsort(-self.means)[:10]
        ref = self.reference_means
        drift = None
        if ref.size and ref.shape[0] >= 2:
            t = np.arange(ref.shape[0], dtype=np.float64)
            drift = [float(np.polyfit(t, ref[:, j], 1)[0]) for j in range(ref.shape[1])]
        return {"best_code": self.best_code.tolist(), "best_mean": self.best_mean, "best_n": self.best_n,
                "best_sem": self.best_sem, "selection_mean": self.best_mean,
                "holdout": {"mean": _num(self.holdout_mean), "sem": _num(self.holdout_sem), "n": self.holdout_n,
                            "ci95": [_num(v) for v in self.holdout_ci95],
                            "values": np.asarray(self.holdout_values, dtype=np.float64).tolist(),
                            "note": "unbiased estimate of best_code's mean response from presentations "
                                    "not used to choose it (best_mean/selection_mean are biased upwards)"},
                "presentations": self.presentations, "blocks": self.blocks,
                "seconds": self.seconds, "replayed_blocks": self.replayed_blocks, "batch_size": self.batch_size,
                "top": [{"code": self.codes[i].tolist(), "mean": float(self.means[i]), "n": int(self.counts[i])}
                        for i in order],
                "reference": {"means_per_block": ref.tolist(), "slope_per_block": drift,
                              "first_block": ref[0].tolist() if ref.size else [],
                              "last_block": ref[-1].tolist() if ref.size else []},
                "ignored_messages": len(self.ignored), "config": self.config}

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``history.npz``, ``best.png`` and, last, ``result.json`` into ``folder``
        (:func:`mango.results.write_final_files`: "finished" is only seen with every file complete)."""
        write_final_files(folder, self.summary(),
                          {"block_best_mean": self.block_best_mean, "block_presentations": self.block_presentations,
                           "reference_means": self.reference_means, "codes": self.codes, "means": self.means,
                           "counts": self.counts, "best_code": self.best_code},
                          self.best_image)


def _num(x: float) -> float | None:
    """A float for JSON: ``None`` for nan/inf."""
    return float(x) if np.isfinite(x) else None


def _mean_sem(v: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of ``v`` (nan where undefined)."""
    v = np.asarray(v, dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size >= 2 else float("nan")
    return mean, sem


class _Stats:
    """Running sum / sum of squares / count per code."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.codes: list[np.ndarray] = []
        self.s: list[float] = []
        self.ss: list[float] = []
        self.n: list[int] = []

    def add(self, code: np.ndarray, values: np.ndarray) -> None:
        key = code.tobytes()
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.codes)
            self.codes.append(code.copy())
            self.s.append(0.0)
            self.ss.append(0.0)
            self.n.append(0)
        self.s[i] += float(values.sum())
        self.ss[i] += float((values ** 2).sum())
        self.n[i] += int(values.size)

    def shrunk(self) -> np.ndarray:
        """Every code's shrunk mean (:func:`mango.shrinkage.shrunk_means` over presentations)."""
        return shrunk_means(self.s, self.ss, self.n)[0]

    def best(self, min_n: int = 0) -> tuple[int, float]:
        """Index and raw mean of the best code by shrunk mean among those with at least ``min_n``
        presentations (all codes when none has that many): ranking by the raw mean would pick the
        luckiest of many codes seen twice."""
        n = np.asarray(self.n)
        means = np.asarray(self.s) / n
        post = self.shrunk()
        masked = np.where(n >= min_n, post, -np.inf) if (n >= min_n).any() else post
        i = int(np.argmax(masked))
        return i, float(means[i])

    def sem(self, i: int) -> float:
        n = self.n[i]
        if n < 2:
            return float("nan")
        var = max(0.0, (self.ss[i] - self.s[i] ** 2 / n) / (n - 1))
        return float(np.sqrt(var / n))


def stimulus_images(generator: Any, I: np.ndarray) -> np.ndarray:
    """Codes ``int64 [k, d]`` -> the ``uint8 [k, H, W, C]`` images a rig is shown (via the generator's
    ``to_uint8``, else [0, 1] clipping)."""
    with torch.no_grad():
        x = generator(generator.space.decode(I))
    return display_uint8(x, generator)


class RigPolicy:
    """The noise-aware evaluation policy of the loop kernel (:func:`mango.loop.run_loop`) for a live rig.

    Each step is one block (see the module doc): the asked candidates, plus the
    incumbent every ``retest_every`` blocks, plus the reference images, each shown
    ``repeats`` times in a seeded random order; the optimizer is told each
    candidate's mean. When no further search block fits the budget, one step
    without asking shows the best codes again (the confirmation block) and
    chooses the recommendation; a last step shows only that code again
    ``holdout_repeats`` times (the hold-out block), whose responses alone give the
    reported, unbiased estimate.
    Presentations are the budget unit. Every block is logged in
    ``presentations.jsonl`` before it is sent and its response before the
    optimizer sees it; on resume a logged response is used, never presented again.

    Args: as :func:`closed_loop`.
    """

    checkpoints = False  # the block plan depends on every earlier block: resume replays them all
    #: config keys a resume may change while no block has been told to the optimizer: the presentation log
    #: keeps every channel of the rig's answers, so a corrected channel selection replays them
    free_keys = ("select",)

    def __init__(self, rig: Any, generator: Any, *, seed: int = 0, repeats: int = 2, retest_every: int = 3,
                 confirm_top: int = 5, confirm_repeats: int | None = None, reference: np.ndarray | None = None,
                 select: int | Sequence[int] | str | None = None, holdout_repeats: int = 10) -> None:
        if int(repeats) < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats!r}")
        if int(retest_every) < 0:
            raise ConfigError(f"retest_every must be >= 0 (0 = never), got {retest_every!r}")
        confirm_repeats = 2 * int(repeats) if confirm_repeats is None else int(confirm_repeats)
        if int(confirm_top) < 0 or confirm_repeats < 1:
            raise ConfigError(f"confirm_top must be >= 0 and confirm_repeats >= 1, got {confirm_top!r}, "
                              f"{confirm_repeats!r}")
        if int(holdout_repeats) < 0:
            raise ConfigError(f"holdout_repeats must be >= 0 (0 = no hold-out estimate), got {holdout_repeats!r}")
        ref = None if reference is None else np.ascontiguousarray(reference, dtype=np.uint8)
        if ref is not None and (ref.ndim != 4 or len(ref) == 0):
            raise ConfigError(f"reference images must be uint8 [r, H, W, C] with r >= 1, got shape {ref.shape}")
        self.rig, self.generator, self.seed = rig, generator, int(seed)
        self.repeats, self.retest_every = int(repeats), int(retest_every)
        self.confirm_top, self.confirm_repeats = int(confirm_top), confirm_repeats
        self.holdout_repeats = int(holdout_repeats)
        self.reserve = self.confirm_top * self.confirm_repeats + self.holdout_repeats
        self.ref, self.n_ref, self.select = ref, 0 if ref is None else len(ref), select
        self.stats = _Stats()
        self.plog: PresentationLog | None = None
        self.block_best: list[float] = []
        self.block_pres: list[int] = []
        self.ref_means: list[np.ndarray] = []
        self.replayed = 0
        self.confirmed = False
        self.chosen: int | None = None  # stats index of the recommendation, fixed before the hold-out block
        self.holdout: np.ndarray | None = None  # the hold-out responses (selected channel(s))
        self._retest = self._confirm = self._holdout = False
        self._last: tuple[int, int, np.ndarray, np.ndarray] | None = None  # (n_cand, best_n, means, ref means)
        self._channels: int | None = None  # channels of the rig's first answer; later answers must match it

    def config(self) -> dict[str, Any]:
        """The policy's settings (kept in ``run.json``: a resume with other settings is refused)."""
        return {"repeats": self.repeats, "retest_every": self.retest_every, "confirm_top": self.confirm_top,
                "confirm_repeats": self.confirm_repeats, "holdout_repeats": self.holdout_repeats,
                "select": self.select,
                "reference_sha256": None if self.ref is None else hashlib.sha256(self.ref.tobytes()).hexdigest()}

    def identity(self) -> dict[str, Any]:
        """``{"generator": ...}`` for :func:`mango.loop.run_identity` (the rig itself is named in the config)."""
        gen = self.generator
        desc = getattr(gen, "describe", None)
        space = getattr(gen, "space", None)
        return {"generator": {"describe": str(desc()) if callable(desc) else type(gen).__qualname__,
                              "space": space.to_dict() if hasattr(space, "to_dict") else None}}

    def open(self, run_dir: Path | None, optimizer: Optimizer) -> None:
        self.d = optimizer.space.d
        if getattr(optimizer, "needs_objective", False):  # e.g. elite's natural starts and noise mode
            optimizer.bind(SimpleNamespace(generator=self.generator, space=self.generator.space, noisy=True))
        self.plog = PresentationLog(run_dir / "presentations.jsonl") if run_dir is not None else None

    def plan(self, left: int) -> int | None:
        stats, g = self.stats, len(self.block_best)
        retest = bool(self.retest_every and g > 0 and g % self.retest_every == 0 and stats.codes)
        n_cand = (left - self.reserve) // self.repeats - self.n_ref - retest
        if n_cand < 1 and retest:  # the last block: candidates rather than a re-test
            retest, n_cand = False, n_cand + 1
        confirm = n_cand < 1 and self.confirm_top > 0 and not self.confirmed and bool(stats.codes)
        holdout = (n_cand < 1 and not confirm and self.holdout_repeats > 0 and self.holdout is None
                   and bool(stats.codes) and left >= self.holdout_repeats)
        if n_cand < 1 and not confirm and not holdout:
            return None
        self._retest, self._confirm, self._holdout = retest, confirm, holdout
        self._holdout_left = left
        return 0 if (confirm or holdout) else n_cand

    def min_budget(self, batch_size: int = 1) -> int:
        """Presentations a run needs for a first search block of ``batch_size`` candidates: the
        ``reserve`` kept for the final blocks plus the block itself (``repeats`` x (candidates + references))."""
        return self.reserve + self.repeats * (max(1, int(batch_size)) + self.n_ref)

    def too_small(self, budget: int, batch_size: int | None = None) -> str:
        """Why ``budget`` fits no search block, in one line naming what takes the presentations
        (the hold-out and confirmation reserves, repeats, references) and the budget that would fit."""
        parts = []
        if self.holdout_repeats:
            parts.append(f"hold-out block: holdout_repeats={self.holdout_repeats}")
        if self.confirm_top:
            parts.append(f"confirmation block: confirm_top={self.confirm_top} x confirm_repeats="
                         f"{self.confirm_repeats} = {self.confirm_top * self.confirm_repeats}")
        reserved = (f"{self.reserve} presentations are reserved from it for the final blocks ({'; '.join(parts)}), "
                    if self.reserve else "")
        fit = f"at least {self.min_budget()}"
        if batch_size is not None and int(batch_size) > 1:
            fit += f" ({self.min_budget(batch_size)} for a first block of batch_size {int(batch_size)})"
        lower = " or a smaller holdout_repeats / confirm_top" if self.reserve else ""
        refs = f" + {self.n_ref} reference image{'' if self.n_ref == 1 else 's'}" if self.n_ref else ""
        return (f"budget {budget} presentations is too small for one block: {reserved}and one search block needs "
                f"{self.repeats * (1 + self.n_ref)}{' more' if self.reserve else ''} (1 candidate{refs}, each shown "
                f"repeats={self.repeats} times); valid: a budget of {fit}{lower}")

    def check_fits(self, budget: int, batch_size: int | None = None) -> None:
        """Refuse a ``budget`` (presentations) that fits no search block, before anything is sent.

        Raises:
            ConfigError: the message of :meth:`too_small`.
        """
        if budget < self.min_budget():
            raise ConfigError(self.too_small(budget, batch_size))

    def _min_n(self) -> int:
        """Presentations a code needs to be recommended (after the confirmation block: confirmed codes)."""
        return self.repeats + self.confirm_repeats if self.confirmed else 0

    def _choice(self) -> int:
        """Stats index of the recommendation: fixed once the hold-out block is planned."""
        return self.chosen if self.chosen is not None else self.stats.best(self._min_n())[0]

    def evaluate(self, step: int, I: np.ndarray) -> Step:
        return self._block(step, I, logged_only=False)

    def replay(self, step: int, I: np.ndarray, row: JournalRow) -> Step:
        return self._block(step, I, logged_only=True)

    def _check_channels(self, g: int, reply: Reply) -> None:
        """Refuse, unrecorded, a live answer whose channel count differs from the run's earlier answers.

        A logged answer is replayed on every resume and the channel selection is fixed once a block has
        been told, so a logged answer that lost a channel could never be read again: the run folder would
        be stuck. Not logging it keeps the folder resumable once the rig reports its channels again.

        Raises:
            RigError: naming the block, both channel counts and what to do.
        """
        ch = _n_channels(reply)
        if self._channels is not None and ch != self._channels:
            raise RigError(f"the rig answered block {g} with {ch} channel(s), but its earlier answers in this run had "
                           f"{self._channels} (an electrode lost or added?); that answer is not recorded. Make the "
                           f"rig report the same {self._channels} channel(s) and rerun the same command (the run "
                           "resumes at this block, showing its images again), or start a new run folder to go on "
                           f"with {ch}")

    def _block(self, g: int, I: np.ndarray, logged_only: bool) -> Step:
        stats, confirm, holdout, plog = self.stats, self._confirm, self._holdout, self.plog
        if holdout:  # the chosen code alone, holdout_repeats times: the reported estimate, never the choice
            self.chosen = self._choice()
            codes = [stats.codes[self.chosen]]
            kinds = ["holdout"]
            block_repeats = self._holdout_left  # holdout_repeats + what no search block could use
        elif confirm:  # final block: the best codes by mean, shown confirm_repeats times each
            top = np.argsort(-stats.shrunk(), kind="stable")[:self.confirm_top]
            codes = [stats.codes[i] for i in top]
            kinds = ["confirm"] * len(codes)
            block_repeats = self.confirm_repeats
        else:
            codes = [row for row in I]
            kinds = ["cand"] * len(I)
            block_repeats = self.repeats
        n_cand = len(I)
        if self._retest:
            bi, _ = stats.best()
            codes.append(stats.codes[bi])
            kinds.append("retest")
        images = stimulus_images(self.generator, np.asarray(codes, dtype=np.int64))
        if self.ref is not None and not (confirm or holdout):
            if self.ref.shape[1:] != images.shape[1:]:
                raise ConfigError(f"reference images are {self.ref.shape[1:]} (H, W, C) but the generator makes "
                                  f"{images.shape[1:]}")
            images = np.concatenate([images, self.ref])
            kinds += [f"ref{j}" for j in range(self.n_ref)]
        n_img = len(images)
        ids = g * ID_STRIDE + np.arange(n_img, dtype=np.int64)
        order = np.random.default_rng([self.seed, 7, g]).permutation(np.repeat(np.arange(n_img), block_repeats))
        block = Block(g, ids, images, block_repeats, order)
        sent_rec = {"ev": "sent", "block": g, "codes": np.asarray(codes).tolist(), "kinds": kinds,
                    "image_ids": ids.tolist(), "order": order.tolist(), "repeats": block_repeats,
                    "time": time.time()}
        is_replay = False
        if plog is not None and g in plog.sent:
            old = plog.sent[g]
            if old["codes"] != sent_rec["codes"] or old["order"] != sent_rec["order"]:
                raise MangoError(f"resume: block {g} differs from the one logged in {plog.path}; was the seed, "
                                 "the optimizer or a parameter changed?")
        elif plog is not None:
            plog.append(sent_rec)
        if plog is not None and g in plog.responses:
            rec = plog.responses[g]
            reply = Reply(g, np.asarray(rec["image_ids"], dtype=np.int64),
                          np.asarray(rec["responses"], dtype=np.float64))
            is_replay = True
            self.replayed += 1
        elif logged_only:
            raise MangoError(f"resume: block {g} is in the journal but its response is not in "
                             f"{None if plog is None else plog.path} (corrupt run folder)")
        else:
            if hasattr(self.rig, "expected_channels"):   # a rig client that checks files itself (XDream)
                self.rig.expected_channels = self._channels
            reply = self.rig.present(block)
            self._check_channels(g, reply)   # before it is logged: a logged answer is replayed on every resume
            if plog is not None:
                rec = {"ev": "response", "block": g, "attempt": int(block.attempt),
                       "image_ids": np.asarray(reply.image_ids).tolist(),
                       "responses": np.asarray(reply.responses).tolist(), "time": time.time()}
                if reply.nonce is not None:      # ties the record to the lab's own file (an LSL recording)
                    rec["nonce"] = str(reply.nonce)
                onsets = (reply.meta or {}).get("onsets")
                if onsets is not None:           # the lab's clock (LSL), as it sent them
                    rec["onsets"] = np.asarray(onsets, dtype=np.float64).tolist()
                plog.append(rec)
        if self._channels is None:
            self._channels = _n_channels(reply)
        # -- digest: each image's mean over its presentations -----------------------
        try:
            y = select_channels(reply.responses, self.select)
        except ConfigError as exc:     # e.g. a channel the rig does not record: its answer is logged already
            raise ConfigError(f"{exc}. The rig's answer to block {g} is kept in the run folder's presentation "
                              "log: rerun with a channel it has (--channel / select=) and the same folder, and "
                              "the run resumes without showing these images again") from None
        j = np.asarray(reply.image_ids, dtype=np.int64) - g * ID_STRIDE
        cnt = np.bincount(j, minlength=n_img)
        means = np.bincount(j, weights=y, minlength=n_img) / np.maximum(cnt, 1)
        for i in range(n_img):
            if kinds[i] in ("cand", "retest", "confirm"):
                stats.add(np.asarray(codes[i], dtype=np.int64), y[j == i])
        if holdout:
            self.holdout = np.asarray(y, dtype=np.float64).copy()
        self.confirmed = self.confirmed or confirm
        bi = self._choice()
        bm = float(stats.s[bi] / stats.n[bi])
        rmeans = means[n_img - self.n_ref:] if (self.n_ref and not (confirm or holdout)) else np.zeros(0)
        self._last = (n_cand, stats.n[bi], means[:n_cand], rmeans)
        extra = {"block": g, "presentations": int(len(y)), "best_mean": bm, "reference_means": rmeans.tolist()}
        return Step(means[:n_cand], int(len(y)), extra, is_replay)

    def finish_step(self, state: LoopState, I: np.ndarray, step: Step) -> BlockEvent:
        n_cand, best_n, cand_means, rmeans = self._last
        g = len(self.block_best)
        bm = step.extra["best_mean"]
        self.block_best.append(bm)
        self.block_pres.append(state.used)
        if not (self._confirm or self._holdout):
            self.ref_means.append(rmeans)
        log.info("block %d: %d candidates, best mean %.4g (n=%d), %d/%d presentations%s", g, n_cand, bm,
                 best_n, state.used, state.budget, " (from the log)" if step.replayed else "")
        return BlockEvent(g, n_cand, cand_means, state.used, state.budget, bm, best_n, step.replayed, rmeans)

    def result(self, state: LoopState, optimizer: Optimizer, config: dict[str, Any]) -> RigRunResult:
        stats = self.stats
        if not stats.codes:
            raise MangoError(self.too_small(state.budget, optimizer.k))
        bi = self._choice()
        bm = float(stats.s[bi] / stats.n[bi])
        held = np.zeros(0) if self.holdout is None else self.holdout
        h_mean, h_sem = _mean_sem(held)
        return RigRunResult(best_code=stats.codes[bi], best_mean=bm, best_n=stats.n[bi], best_sem=stats.sem(bi),
                            best_image=stimulus_images(self.generator, stats.codes[bi][None])[0],
                            codes=np.asarray(stats.codes), means=np.asarray(stats.s) / np.asarray(stats.n),
                            counts=np.asarray(stats.n), block_best_mean=np.asarray(self.block_best),
                            block_presentations=np.asarray(self.block_pres),
                            reference_means=np.asarray(self.ref_means).reshape(len(self.ref_means), self.n_ref),
                            presentations=state.used, blocks=len(self.block_best), seconds=state.elapsed,
                            replayed_blocks=self.replayed, ignored=list(getattr(self.rig, "ignored", [])),
                            config=config, batch_size=optimizer.k, holdout_mean=h_mean, holdout_sem=h_sem,
                            holdout_n=int(held.size), holdout_values=held)

    def close(self) -> None:
        if self.plog is not None:
            self.plog.close()


def _recorded_select(folder: Path) -> Any:
    """The channel selection recorded in ``folder/run.json`` (``None`` when there is none or it is unreadable:
    the loop then says what is wrong with the folder)."""
    try:
        cfg = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("select") if isinstance(cfg, dict) else None


def _n_channels(reply: Reply) -> int:
    """Channels of a reply's responses (``[P]`` counts as one)."""
    r = np.asarray(reply.responses)
    return 1 if r.ndim < 2 else int(r.shape[1])


def closed_loop(rig: Any, generator: Any, optimizer: Optimizer | str, budget: int, seed: int = 0, *,
                batch_size: int | None = None, params: dict[str, Any] | None = None, repeats: int = 2,
                retest_every: int = 3, confirm_top: int = 5, confirm_repeats: int | None = None,
                holdout_repeats: int = 10, reference: np.ndarray | None = None,
                select: int | Sequence[int] | str | None = None, run_dir: str | os.PathLike | None = None,
                config: dict[str, Any] | None = None,
                callbacks: Sequence[Callable[[BlockEvent], None]] = ()) -> RigRunResult:
    """Maximize a recorded neuron's mean response with a live rig, in blocks.

    A convenience: builds the optimizer and a :class:`RigPolicy` and runs them
    through the one loop kernel, :func:`mango.loop.run_loop`.

    Args:
        rig: anything with ``present(Block) -> Reply`` (``ZmqRigClient``,
            ``FileDropClient``, ``mango.targets.rig.RigTarget``, ``LocalRig``).
        generator: ``space`` + ``generator(space.decode(I)) -> [k, C, H, W]`` (uint8 via ``to_uint8``
            or [0, 1] clipping).
        optimizer: an ask/tell optimizer or a registered name (built with ``seed``, ``batch_size``, ``params``).
        budget: total presentations (candidates x repeats + re-tests + references), > 0.
        repeats: presentations per image per block (>= 1), in a seeded random order.
        retest_every: every this many blocks the current best code is shown again
            (``repeats`` times) so its mean firms up; 0 = never.
        confirm_top: codes shown again in the final confirmation block (0 = no confirmation).
        confirm_repeats: presentations per code in that block (default ``2 * repeats``).
        holdout_repeats: presentations of the chosen code in the final hold-out block (>= 0; 0 = none),
            reserved from the start; the block also takes the few presentations no search block could
            use, so the budget is spent exactly. The reported ``holdout_mean +- holdout_sem`` come from these alone (unbiased).
        reference: optional ``uint8 [r, H, W, C]`` images shown in every block (drift tracking).
        select: channel selection applied to the rig's ``[P, channels]`` responses (see :func:`select_channels`);
            ``None`` (the default): the selection recorded in ``run_dir`` when it resumes one; else the one
            channel of a one-channel rig, and an error naming the channels for a rig that records several (its
            first answer is kept: rerun with ``select=`` and it is replayed).
        run_dir: folder for ``presentations.jsonl``, the journal and results; an existing one is resumed.
        config: stored in ``run.json``; resuming with another config is refused.
    """
    budget = check_budget(budget, "presentations")
    if select is None and run_dir is not None:   # a folder started with a selection (or before select=None
        select = _recorded_select(Path(run_dir))  # was the default, when 0 was) resumes with it
    policy = RigPolicy(rig, generator, seed=seed, repeats=repeats, retest_every=retest_every,
                       confirm_top=confirm_top, confirm_repeats=confirm_repeats, reference=reference, select=select,
                       holdout_repeats=holdout_repeats)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    policy.check_fits(budget, batch_size)  # before anything is built, written or sent
    images = max(1, budget // policy.repeats)   # the optimizer's budget, in images (candidates)
    if batch_size is not None and batch_size > images:
        log.warning("batch_size %d is more candidates than a budget of %d presentations can show at repeats=%d "
                    "(%d image%s at most): using batch_size %d", batch_size, budget, policy.repeats, images,
                    "" if images == 1 else "s", images)
        batch_size = images
    optimizer = build_optimizer(optimizer, generator.space, seed=seed, batch_size=batch_size,
                                budget=images, params=params)
    config = dict(config or {})
    config.setdefault("budget", budget)
    config.setdefault("seed", seed)
    config.setdefault("optimizer", optimizer.name)
    for key, value in policy.config().items():
        config.setdefault(key, value)
    return run_loop(optimizer, budget, policy, run_dir=run_dir, config=config, callbacks=callbacks)
