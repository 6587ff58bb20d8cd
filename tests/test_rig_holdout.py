"""The value a rig run reports for its recommendation comes only from the hold-out block.

A scripted rig answers every search / confirmation presentation with a noisy function of the image,
and the hold-out block (the only block of one image shown ``holdout_repeats`` times) with that plus
1000: the reported estimate must be exactly the hold-out responses' mean, the selection mean must
not contain any of them, and the hold-out must not change which code is recommended.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mango.rig.closedloop import PresentationLog, closed_loop, select_channels
from mango.rig.protocol import Reply

from _rig_helpers import generator

HOLDOUT = 8
OFFSET = 1000.0


class ScriptedRig:
    """Deterministic given the block: response = image brightness / 10 + seeded noise (+ OFFSET in the
    hold-out block). ``crash_on_holdout`` raises once instead of answering the hold-out block."""

    def __init__(self, crash_on_holdout: bool = False) -> None:
        self.crash_on_holdout = crash_on_holdout
        self.blocks: list[int] = []

    @staticmethod
    def is_holdout(block) -> bool:
        return len(block.image_ids) == 1 and block.repeats >= HOLDOUT  # search 2, confirmation 4

    def present(self, block) -> Reply:
        self.blocks.append(int(block.block))
        if self.crash_on_holdout and self.is_holdout(block):
            self.crash_on_holdout = False
            raise KeyboardInterrupt("simulated crash during the hold-out block")
        order = np.asarray(block.order)
        base = np.asarray(block.images, dtype=np.float64).mean(axis=(1, 2, 3)) / 10.0
        noise = np.random.default_rng([int(block.block), 11]).normal(0.0, 2.0, len(order))
        y = base[order] + noise + (OFFSET if self.is_holdout(block) else 0.0)
        return Reply(block.block, np.asarray(block.image_ids)[order], y[:, None])

    def close(self) -> None:
        pass


def _run(run_dir, rig):
    return closed_loop(rig, generator(), "ga", 120, seed=3, batch_size=8, repeats=2, retest_every=2,
                       confirm_top=3, confirm_repeats=4, holdout_repeats=HOLDOUT, run_dir=run_dir)


def test_reported_value_comes_only_from_holdout_presentations(tmp_path):
    res = _run(tmp_path, ScriptedRig())
    plog = PresentationLog(tmp_path / "presentations.jsonl")
    plog.close()
    blocks = sorted(plog.sent)
    last = blocks[-1]
    assert plog.sent[last]["kinds"] == ["holdout"] and plog.sent[last]["repeats"] >= HOLDOUT
    assert set(plog.sent[last - 1]["kinds"]) == {"confirm"}
    assert plog.sent[last]["codes"] == [res.best_code.tolist()]
    # the hold-out estimate is exactly the hold-out responses, nothing else
    held = select_channels(np.asarray(plog.responses[last]["responses"]), 0)
    assert res.holdout_n == plog.sent[last]["repeats"] == len(held)
    assert res.holdout_mean == pytest.approx(held.mean()) and res.holdout_mean > OFFSET
    assert res.holdout_sem == pytest.approx(held.std(ddof=1) / np.sqrt(len(held)))
    # its 95 % interval is a t-interval (n - 1 degrees of freedom), wider than mean +- 1.96 SE at small n
    from scipy.stats import t

    half = t.ppf(0.975, len(held) - 1) * res.holdout_sem
    assert res.holdout_ci95 == pytest.approx((held.mean() - half, held.mean() + half))
    assert half > 1.96 * res.holdout_sem
    np.testing.assert_allclose(res.holdout_values, held)
    # the selection mean / the choice use every earlier presentation and none of the hold-out
    per_code: dict[tuple, list[float]] = {}
    for b in blocks[:-1]:
        sent, rsp = plog.sent[b], plog.responses[b]
        y = select_channels(np.asarray(rsp["responses"]), 0)
        j = np.asarray(rsp["image_ids"]) - np.asarray(sent["image_ids"])[0]
        for i, code in enumerate(sent["codes"]):
            per_code.setdefault(tuple(code), []).extend(y[j == i].tolist())
    confirmed = {c: np.mean(v) for c, v in per_code.items() if len(v) >= 2 + 4}
    assert tuple(res.best_code.tolist()) == max(confirmed, key=confirmed.get)
    assert res.best_mean == pytest.approx(confirmed[tuple(res.best_code.tolist())]) and res.best_mean < OFFSET
    assert res.best_n == len(per_code[tuple(res.best_code.tolist())])
    assert res.presentations == 120 == sum(len(plog.responses[b]["image_ids"]) for b in blocks)
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["holdout"]["mean"] == pytest.approx(res.holdout_mean) and summary["holdout"]["n"] == len(held)
    assert summary["holdout"]["ci95"] == pytest.approx(list(res.holdout_ci95))
    assert summary["selection_mean"] == pytest.approx(res.best_mean)
    assert summary["config"]["holdout_repeats"] == HOLDOUT


def test_no_holdout_block_when_disabled(tmp_path):
    res = closed_loop(ScriptedRig(), generator(), "ga", 120, seed=3, batch_size=8, repeats=2, confirm_top=3,
                      confirm_repeats=4, holdout_repeats=0, run_dir=tmp_path)
    plog = PresentationLog(tmp_path / "presentations.jsonl")
    plog.close()
    assert set(plog.sent[max(plog.sent)]["kinds"]) == {"confirm"}
    assert res.holdout_n == 0 and np.isnan(res.holdout_mean)
    assert json.loads((tmp_path / "result.json").read_text())["holdout"]["mean"] is None


def test_crash_during_holdout_resumes_to_the_same_result(tmp_path):
    whole = _run(tmp_path / "whole", ScriptedRig())
    rig = ScriptedRig(crash_on_holdout=True)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crashed", rig)
    plog = PresentationLog(tmp_path / "crashed" / "presentations.jsonl")
    plog.close()
    holdout_block = max(plog.sent)
    assert plog.sent[holdout_block]["kinds"] == ["holdout"] and holdout_block not in plog.responses
    again = ScriptedRig()
    res = _run(tmp_path / "crashed", again)
    assert again.blocks == [holdout_block]  # only the unanswered hold-out block is presented again
    assert res.replayed_blocks == holdout_block  # every earlier block came from the log
    np.testing.assert_array_equal(res.best_code, whole.best_code)
    assert res.holdout_mean == pytest.approx(whole.holdout_mean) and res.holdout_n == whole.holdout_n
    assert res.holdout_sem == pytest.approx(whole.holdout_sem)
    assert res.best_mean == pytest.approx(whole.best_mean) and res.presentations == whole.presentations
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    b = json.loads((tmp_path / "crashed" / "result.json").read_text())
    for key in ("best_code", "best_mean", "holdout", "presentations", "blocks"):
        assert a[key] == b[key], key
