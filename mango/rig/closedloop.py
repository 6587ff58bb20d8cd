"""The noise-aware closed loop with a live rig: blocks = generations, repeats, re-tests, references.

Per generation ``g`` (block id ``g``)::

    I = optimizer.ask()                                  candidates  int64 [k, d]
    block = candidates (+ current best every ``retest_every`` blocks) (+ reference images)
            each shown ``repeats`` times in a seeded random order
    log "sent" (fsync)  ->  rig.present(block)  ->  log "response" with the answered attempt (fsync)
    y = mean over each candidate's repeats of the selected channel(s)
    optimizer.tell(I, y); journal row (mango.journal)

The recommended stimulus is the code with the best **mean over all its
presentations** (re-tests add presentations, so a lucky trial regresses to its
mean), never the single luckiest trial. Because a mean over ``repeats`` trials
chosen as the maximum of many is still biased upwards (the winner's curse), the
last block is a *confirmation block*: the ``confirm_top`` codes with the best
means are shown ``confirm_repeats`` more times each (budget reserved from the
start), and the recommendation is the best mean among codes with at least
``repeats + confirm_repeats`` presentations. Reference images (user-given, fixed) are
shown in every block; their per-block means track drift and are reported.

Crash safety: ``run_dir/presentations.jsonl`` gets every block *before* it is sent
and every response *before* the optimizer sees it (flush + fsync; a torn last line
is cut on open). Restarting with the same arguments replays: the optimizer is
asked again (same seed) and told the logged values; a block whose response is
logged is never sent again; a block that was sent but not answered is sent again.
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
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MangoError
from ..journal import Journal, atomic_write
from ..optimizers import make_optimizer
from ..optimizers.base import Optimizer
from .model import float_to_uint8
from .protocol import Block, Reply

__all__ = ["closed_loop", "RigRunResult", "select_channels", "PresentationLog", "BlockEvent", "ID_STRIDE"]

log = logging.getLogger(__name__)
ID_STRIDE = 100_000  # image id = block * ID_STRIDE + index in block


def select_channels(responses: np.ndarray, select: int | Sequence[int] | str | None) -> np.ndarray:
    """``float [P, channels]`` -> ``float [P]``: one channel (int), the mean of a list, or ``"mean"`` of all.

    ``None`` means channel 0 of a one-channel rig (an error for several channels).
    """
    r = np.asarray(responses, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    ch = r.shape[1]
    if select is None:
        if ch != 1:
            raise ConfigError(f"the rig records {ch} channels; choose one with select= (an int in [0, {ch}), "
                              "a list of ints, or 'mean')")
        return r[:, 0]
    if isinstance(select, str):
        if select != "mean":
            raise ConfigError(f"unknown channel selection {select!r}; valid choices: an int, a list of ints, 'mean'")
        return r.mean(axis=1)
    idx = [int(select)] if isinstance(select, (int, np.integer)) else [int(c) for c in select]
    if not idx:
        raise ConfigError("channel selection list is empty")
    bad = [c for c in idx if not 0 <= c < ch]
    if bad:
        raise ConfigError(f"channel {bad[0]} does not exist; the rig records channels 0..{ch - 1}")
    return r[:, idx].mean(axis=1)


class PresentationLog:
    """``presentations.jsonl``: one JSON line per sent block / received response, fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sent: dict[int, dict[str, Any]] = {}
        self.responses: dict[int, dict[str, Any]] = {}
        self._read()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _read(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        pos = good = 0
        while pos < len(raw):
            end = raw.find(b"\n", pos)
            if end < 0:
                break
            try:
                rec = json.loads(raw[pos:end])
            except json.JSONDecodeError:
                break
            target = self.sent if rec.get("ev") == "sent" else self.responses
            if rec.get("ev") == "response" and rec["block"] in self.responses:
                raise MangoError(f"{self.path}: block {rec['block']} has two responses (corrupt log)")
            target[int(rec["block"])] = rec
            pos = good = end + 1
        if good < len(raw):
            log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write",
                        self.path, len(raw) - good)
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

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

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (``result.json``)."""
        order = np.argsort(-self.means)[:10]
        ref = self.reference_means
        drift = None
        if ref.size and ref.shape[0] >= 2:
            t = np.arange(ref.shape[0], dtype=np.float64)
            drift = [float(np.polyfit(t, ref[:, j], 1)[0]) for j in range(ref.shape[1])]
        return {"best_code": self.best_code.tolist(), "best_mean": self.best_mean, "best_n": self.best_n,
                "best_sem": self.best_sem, "presentations": self.presentations, "blocks": self.blocks,
                "seconds": self.seconds, "replayed_blocks": self.replayed_blocks,
                "top": [{"code": self.codes[i].tolist(), "mean": float(self.means[i]), "n": int(self.counts[i])}
                        for i in order],
                "reference": {"means_per_block": ref.tolist(), "slope_per_block": drift,
                              "first_block": ref[0].tolist() if ref.size else [],
                              "last_block": ref[-1].tolist() if ref.size else []},
                "ignored_messages": len(self.ignored), "config": self.config}


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

    def best(self, min_n: int = 0) -> tuple[int, float]:
        """Index and mean of the best code among those with at least ``min_n`` presentations
        (all codes when none has that many)."""
        n = np.asarray(self.n)
        means = np.asarray(self.s) / n
        masked = np.where(n >= min_n, means, -np.inf) if (n >= min_n).any() else means
        i = int(np.argmax(masked))
        return i, float(means[i])

    def sem(self, i: int) -> float:
        n = self.n[i]
        if n < 2:
            return float("nan")
        var = max(0.0, (self.ss[i] - self.s[i] ** 2 / n) / (n - 1))
        return float(np.sqrt(var / n))


def _images(generator: Any, I: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = generator(generator.space.decode(I))
    return float_to_uint8(x, getattr(generator, "to_uint8", None))


def closed_loop(rig: Any, generator: Any, optimizer: Optimizer | str, budget: int, seed: int = 0, *,
                batch_size: int | None = None, params: dict[str, Any] | None = None, repeats: int = 2,
                retest_every: int = 3, confirm_top: int = 5, confirm_repeats: int | None = None,
                reference: np.ndarray | None = None,
                select: int | Sequence[int] | str | None = 0, run_dir: str | os.PathLike | None = None,
                config: dict[str, Any] | None = None,
                callbacks: Sequence[Callable[[BlockEvent], None]] = ()) -> RigRunResult:
    """Maximize a recorded neuron's mean response with a live rig, in blocks.

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
        reference: optional ``uint8 [r, H, W, C]`` images shown in every block (drift tracking).
        select: channel selection applied to the rig's ``[P, channels]`` responses (see :func:`select_channels`).
        run_dir: folder for ``presentations.jsonl``, the journal and results; an existing one is resumed.
        config: stored in ``run.json``; resuming with another config is refused.
    """
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ConfigError(f"budget must be a positive integer number of presentations, got {budget!r}")
    if int(repeats) < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats!r}")
    if int(retest_every) < 0:
        raise ConfigError(f"retest_every must be >= 0 (0 = never), got {retest_every!r}")
    budget, repeats, retest_every = int(budget), int(repeats), int(retest_every)
    confirm_repeats = 2 * repeats if confirm_repeats is None else int(confirm_repeats)
    if int(confirm_top) < 0 or confirm_repeats < 1:
        raise ConfigError(f"confirm_top must be >= 0 and confirm_repeats >= 1, got {confirm_top!r}, "
                          f"{confirm_repeats!r}")
    confirm_top = int(confirm_top)
    reserve = confirm_top * confirm_repeats
    space = generator.space
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, space, batch_size=batch_size, seed=seed,
                                   budget=max(1, budget // repeats), params=params)
    ref = None if reference is None else np.ascontiguousarray(reference, dtype=np.uint8)
    if ref is not None and (ref.ndim != 4 or len(ref) == 0):
        raise ConfigError(f"reference images must be uint8 [r, H, W, C] with r >= 1, got shape {ref.shape}")
    n_ref = 0 if ref is None else len(ref)
    config = dict(config or {})
    config.setdefault("budget", budget)
    config.setdefault("seed", seed)
    config.setdefault("optimizer", optimizer.name)
    config.setdefault("repeats", repeats)
    config.setdefault("retest_every", retest_every)
    config.setdefault("confirm_top", confirm_top)
    config.setdefault("confirm_repeats", confirm_repeats)
    config.setdefault("select", select)
    config.setdefault("reference_sha256", None if ref is None else hashlib.sha256(ref.tobytes()).hexdigest())

    journal = Journal.open(run_dir, config) if run_dir is not None else None
    plog = PresentationLog(Path(run_dir) / "presentations.jsonl") if run_dir is not None else None
    stats = _Stats()
    used = 0
    block_best: list[float] = []
    block_pres: list[int] = []
    ref_means: list[np.ndarray] = []
    replayed = 0
    start = time.perf_counter()
    g = 0
    confirmed = False
    try:
        while True:
            retest = bool(retest_every and g > 0 and g % retest_every == 0 and stats.codes)
            n_cand = (budget - reserve - used) // repeats - n_ref - retest
            if n_cand < 1 and retest:  # the last block: candidates rather than a re-test
                retest, n_cand = False, n_cand + 1
            confirm = n_cand < 1 and confirm_top > 0 and not confirmed and bool(stats.codes)
            if n_cand < 1 and not confirm:
                break
            if confirm:  # final block: the best codes by mean, shown confirm_repeats times each
                top = np.argsort(-(np.asarray(stats.s) / np.asarray(stats.n)), kind="stable")[:confirm_top]
                I = np.zeros((0, space.d), dtype=np.int64)
                n_cand = 0
                codes = [stats.codes[i] for i in top]
                kinds = ["confirm"] * len(codes)
                block_repeats = confirm_repeats
            else:
                I = optimizer.ask()[:n_cand]
                n_cand = len(I)
                kinds = ["cand"] * n_cand
                codes = [row for row in I]
                block_repeats = repeats
            if retest:
                bi, _ = stats.best()
                codes.append(stats.codes[bi])
                kinds.append("retest")
            images = _images(generator, np.asarray(codes, dtype=np.int64))
            if ref is not None and not confirm:
                if ref.shape[1:] != images.shape[1:]:
                    raise ConfigError(f"reference images are {ref.shape[1:]} (H, W, C) but the generator makes "
                                      f"{images.shape[1:]}")
                images = np.concatenate([images, ref])
                kinds += [f"ref{j}" for j in range(n_ref)]
            n_img = len(images)
            ids = g * ID_STRIDE + np.arange(n_img, dtype=np.int64)
            order = np.random.default_rng([seed, 7, g]).permutation(np.repeat(np.arange(n_img), block_repeats))
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
                replayed += 1
            else:
                reply = rig.present(block)
                if plog is not None:
                    plog.append({"ev": "response", "block": g, "attempt": int(block.attempt),
                                 "image_ids": np.asarray(reply.image_ids).tolist(),
                                 "responses": np.asarray(reply.responses).tolist(), "time": time.time()})
            # -- digest ------------------------------------------------------------
            y = select_channels(reply.responses, select)
            j = np.asarray(reply.image_ids, dtype=np.int64) - g * ID_STRIDE
            cnt = np.bincount(j, minlength=n_img)
            means = np.bincount(j, weights=y, minlength=n_img) / np.maximum(cnt, 1)
            for i in range(n_img):
                if kinds[i] in ("cand", "retest", "confirm"):
                    stats.add(np.asarray(codes[i], dtype=np.int64), y[j == i])
            if not confirm:
                optimizer.tell(I, means[:n_cand])
            confirmed = confirmed or confirm
            used += len(y)
            bi, bm = stats.best(repeats + confirm_repeats if confirmed else 0)
            block_best.append(bm)
            block_pres.append(used)
            rmeans = means[n_img - n_ref:] if (n_ref and not confirm) else np.zeros(0)
            if not confirm:
                ref_means.append(rmeans)
            if journal is not None and g >= len(journal.rows) and not confirm:
                journal.append(I, means[:n_cand], time.perf_counter() - start,
                               extra={"block": g, "presentations": int(len(y)), "best_mean": bm,
                                      "reference_means": rmeans.tolist()})
            log.info("block %d: %d candidates, best mean %.4g (n=%d), %d/%d presentations%s", g, n_cand, bm,
                     stats.n[bi], used, budget, " (from the log)" if is_replay else "")
            ev = BlockEvent(g, n_cand, means[:n_cand], used, budget, bm, stats.n[bi], is_replay, rmeans)
            for cb in callbacks:
                cb(ev)
            g += 1
    finally:
        optimizer.close()
        if journal is not None:
            journal.close()
        if plog is not None:
            plog.close()
    if not stats.codes:
        raise MangoError(f"budget {budget} is too small for one block (repeats={repeats}, references={n_ref})")
    bi, bm = stats.best(repeats + confirm_repeats if confirmed else 0)
    means_all = np.asarray(stats.s) / np.asarray(stats.n)
    res = RigRunResult(best_code=stats.codes[bi], best_mean=bm, best_n=stats.n[bi], best_sem=stats.sem(bi),
                       best_image=_images(generator, stats.codes[bi][None])[0], codes=np.asarray(stats.codes),
                       means=means_all, counts=np.asarray(stats.n), block_best_mean=np.asarray(block_best),
                       block_presentations=np.asarray(block_pres),
                       reference_means=np.asarray(ref_means).reshape(len(ref_means), n_ref),
                       presentations=used, blocks=g, seconds=time.perf_counter() - start, replayed_blocks=replayed,
                       ignored=list(getattr(rig, "ignored", [])), config=config)
    if run_dir is not None:
        save_rig_result(res, Path(run_dir))
    return res


def save_rig_result(res: RigRunResult, out: Path) -> None:
    """Write ``result.json``, ``history.npz`` and ``best.png`` into ``out``."""
    import imageio.v3 as iio

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "result.json", json.dumps(res.summary(), indent=2, default=str).encode())
    np.savez(out / "history.npz", block_best_mean=res.block_best_mean, block_presentations=res.block_presentations,
             reference_means=res.reference_means, codes=res.codes, means=res.means, counts=res.counts,
             best_code=res.best_code)
    img = res.best_image[..., 0] if res.best_image.shape[-1] == 1 else res.best_image
    scale = max(1, 128 // max(1, img.shape[0]))
    img = np.kron(img, np.ones((scale, scale) + (() if img.ndim == 2 else (1,)), dtype=np.uint8))
    iio.imwrite(out / "best.png", img)
