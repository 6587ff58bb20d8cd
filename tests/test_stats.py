"""Statistics on synthetic result sets with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mango.stats import (Trace, best_at, median_iqr, normalized_auc, queries_to_threshold, summarize, threshold,
                         win_rates)


def T(unit, opt, seed, values, queries=None, seconds=10.0, opt_seconds=1.0, budget=None):
    values = np.asarray(values, float)
    q = np.arange(1, len(values) + 1) if queries is None else np.asarray(queries)
    return Trace(unit, opt, seed, q, values, seconds, opt_seconds, budget)


def test_best_at_and_queries_to_threshold():
    q = np.array([1, 2, 3, 4, 5])
    v = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    np.testing.assert_array_equal(best_at(q, v, [0, 1, 2, 3, 4, 5, 100]), [np.nan, 1, 3, 3, 5, 5, 5])
    assert queries_to_threshold(q, v, 3.0) == 2
    assert queries_to_threshold(q, v, 4.0) == 4
    assert queries_to_threshold(q, v, 5.0) == 4
    assert math.isinf(queries_to_threshold(q, v, 5.1))
    # gradient AM style counters that skip numbers: the count is the budget counter, not the row
    assert queries_to_threshold(np.array([10, 20, 30]), np.array([0.0, 1.0, 2.0]), 1.0) == 20
    assert threshold(10.0, 0.5) == 5.0
    assert threshold(10.0, 0.9, baseline=-10.0) == 8.0


def test_normalized_auc_known_values():
    # curve 0, 1, 1, 1 normalised by best 1 -> mean 0.75
    assert normalized_auc([1, 2, 3, 4], [0.0, 1.0, 0.5, 0.2], budget=4, best_any=1.0) == pytest.approx(0.75)
    # queries counted 2 and 4 only: q1 has no value yet (0), q2..3 at 1/2, q4 at 1 -> (0 + .5 + .5 + 1)/4
    assert normalized_auc([2, 4], [1.0, 2.0], budget=4, best_any=2.0) == pytest.approx(0.5)
    # a run that stops early stays flat to the budget: 1 at q1..q4 -> 1
    assert normalized_auc([1, 2], [3.0, 3.0], budget=4, best_any=3.0) == pytest.approx(1.0)
    # negative activations, baseline = -2: curve -2, 0, 2 -> (0, .5, 1) -> .5
    assert normalized_auc([1, 2, 3], [-2.0, 0.0, 2.0], budget=3, best_any=2.0, baseline=-2.0) == pytest.approx(0.5)
    assert math.isnan(normalized_auc([1], [0.0], budget=1, best_any=0.0))


def test_median_iqr_with_never():
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0, 4.0)
    m, lo, hi = median_iqr([10.0, 20.0, math.inf])
    assert (m, lo) == (20.0, 15.0) and math.isinf(hi)
    assert all(math.isnan(x) for x in median_iqr([]))


def test_win_rates_known_matrix():
    traces = [
        # unit u1: a > b > c (seed 0); a == b > c (seed 1)
        T("u1", "a", 0, [3.0]), T("u1", "b", 0, [2.0]), T("u1", "c", 0, [1.0]),
        T("u1", "a", 1, [2.0]), T("u1", "b", 1, [2.0]), T("u1", "c", 1, [1.0]),
        # unit u2: c > a > b (seed 0); b not run on seed 1
        T("u2", "a", 0, [2.0]), T("u2", "b", 0, [1.0]), T("u2", "c", 0, [5.0]),
    ]
    opts, W, n = win_rates(traces, ["a", "b", "c"])
    assert opts == ["a", "b", "c"]
    # a vs b: wins (u1,0), tie (u1,1), wins (u2,0) -> 2.5/3
    assert W[0, 1] == pytest.approx(2.5 / 3) and W[1, 0] == pytest.approx(0.5 / 3)
    # a vs c: wins (u1,0), (u1,1); loses (u2,0) -> 2/3
    assert W[0, 2] == pytest.approx(2 / 3) and W[2, 0] == pytest.approx(1 / 3)
    assert W[1, 2] == pytest.approx(2 / 3)
    assert n[0, 1] == 3 and np.isnan(W[0, 0])
    np.testing.assert_allclose(W + W.T, np.where(np.eye(3, dtype=bool), np.nan, 1.0))


def test_summarize_known_answers():
    # unit u: the best any method found is 10 (baseline 0): 50 % -> 5, 90 % -> 9
    traces = [
        T("u", "fast", 0, [5, 9, 10, 10], seconds=4.0, opt_seconds=1.0),
        T("u", "fast", 1, [1, 5, 9, 9], seconds=4.0, opt_seconds=1.0),
        T("u", "slow", 0, [1, 2, 5, 6], seconds=2.0, opt_seconds=0.0),
        T("u", "slow", 1, [1, 1, 1, 8], seconds=2.0, opt_seconds=0.0),
    ]
    stats = summarize(traces, budgets=[1, 4])
    fast, slow = stats
    assert (fast.optimizer, slow.optimizer) == ("fast", "slow")
    assert fast.best_any == 10 and fast.baseline == 0
    assert fast.best_at[1] == (3.0, 2.0, 4.0)
    assert fast.best_at[4] == (9.5, 9.25, 9.75)
    assert fast.q50 == 1.5 and fast.reached50 == 2          # seeds reach 5 at queries 1 and 2
    assert fast.q90 == 2.5 and fast.reached90 == 2          # seeds reach 9 at queries 2 and 3
    assert slow.q50 == 3.5 and slow.reached50 == 2          # 3 and 4
    assert math.isinf(slow.q90) and slow.reached90 == 0
    # AUC: fast seed 0 curve 5, 9, 10, 10 -> .85; seed 1: 1, 5, 9, 9 -> .6 ; median .725
    assert fast.auc == pytest.approx(0.725)
    assert fast.optimizer_share == pytest.approx(0.25) and slow.optimizer_share == 0.0
    assert fast.seconds == 4.0 and fast.seeds == 2


def test_trace_shape_check():
    with pytest.raises(ValueError, match="equal"):
        Trace("u", "o", 0, np.arange(3), np.zeros(4))


def test_summarize_carries_no_value_past_what_a_run_reached():
    # seed 0 ran its whole budget of 100; seed 1 was interrupted at query 40 (partial)
    whole = Trace("u", "opt", 0, np.arange(1, 101), np.linspace(0.0, 1.0, 100), budget=100)
    cut = Trace("u", "opt", 1, np.arange(1, 41), np.full(40, 0.2), budget=100, reached=40, partial=True)
    (s,) = summarize([whole, cut], budgets=[20, 50, 100], budget=100)
    assert s.best_at[20][0] == pytest.approx((best_at(whole.queries, whole.values, [20])[0] + 0.2) / 2)
    assert s.best_at[50][0] == pytest.approx(best_at(whole.queries, whole.values, [50])[0])   # seed 1 left out
    assert s.best_at[100][0] == pytest.approx(1.0)
    assert s.auc == pytest.approx(normalized_auc(whole.queries, whole.values, 100, 1.0, 0.0))   # seed 0 alone
    # the 90 % level: seed 0 reaches it, seed 1 has not yet (pending, not "never")
    assert (s.reached90, s.pending) == (1, (1, 1))
    assert s.q90_reached == queries_to_threshold(whole.queries, whole.values, 0.9)
    # the same run without reached/partial: its last value is carried on, and it never reaches 90 %
    (s2,) = summarize([whole, Trace("u", "opt", 1, cut.queries, cut.values, budget=100)], [20, 50, 100], 100)
    assert s2.pending == (0, 0) and s2.reached90 == 1
    assert s2.best_at[50][0] == pytest.approx((best_at(whole.queries, whole.values, [50])[0] + 0.2) / 2)


def test_a_partial_run_that_ran_its_whole_budget_never_reached_a_missed_level():
    # an interrupted (or failed) run that had done all 60 of its queries missed the 90 % level: "never",
    # not pending; a sibling stopped at 20 is pending
    full = Trace("u", "opt", 0, np.arange(1, 61), np.full(60, 0.3), budget=60, reached=60, partial=True)
    cut = Trace("u", "opt", 1, np.arange(1, 21), np.full(20, 0.3), budget=60, reached=20, partial=True)
    top = Trace("u", "other", 0, np.arange(1, 61), np.linspace(0.0, 1.0, 60), budget=60)
    stats = {s.optimizer: s for s in summarize([full, cut, top], budgets=[60], budget=60)}
    assert stats["opt"].pending == (1, 1)
    assert stats["opt"].reached90 == 0 and np.isinf(stats["opt"].q90)    # median of (inf, pending) = inf


def test_optimizer_share_leaves_out_runs_that_recorded_no_optimizer_time():
    """An interrupted run's result.json has no optimizer_seconds; its seconds still entered the denominator,
    so the report showed 49 % for an optimizer whose share was 91 %."""
    traces = [T("u", "g", 0, [1, 2, 3, 4], seconds=1.0, opt_seconds=0.9),
              T("u", "g", 1, [1, 2, 3, 4], seconds=1.5, opt_seconds=float("nan"))]
    (g,) = summarize(traces, budgets=[4])
    assert g.optimizer_share == pytest.approx(0.9)
