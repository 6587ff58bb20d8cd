"""The graded readout of spiking targets: never outranks a spike, gives the plain rate back exactly,
and grades silent units."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mango.targets.snn_fast import ScanStats, leaky_update
from mango.targets.spiking import TIE_MAX, graded_score, plain_rate, rate_from_score

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


def simulate(current: np.ndarray, beta: float, thr: float, mode: int) -> ScanStats:
    """Leaky neurons driven by ``current [T, B, P]`` (float32) -> statistics ``[B, P]``."""
    cur = torch.from_numpy(current)
    T = cur.shape[0]
    b, th = torch.tensor(beta, dtype=torch.float32), torch.tensor(thr, dtype=torch.float32)
    mem = torch.zeros(cur.shape[1:])
    s = ScanStats.zeros(tuple(cur.shape[1:]), T, torch.float32, "cpu")
    for t in range(T):
        mem = leaky_update(mem, cur[t], b, th, mode)
        s.update(t, mem, mem > th)
    return s


currents = st.integers(1, 40).flatmap(lambda T: st.integers(1, 9).flatmap(lambda P: arrays(
    np.float32, (T, 6, P), elements=st.floats(-50, 50, width=32, allow_subnormal=False))))


@settings(max_examples=300, deadline=None)
@given(current=currents, beta=st.floats(0.0, 1.0), thr=st.floats(0.05, 5.0), mode=st.sampled_from([0, 1, 2]),
       g=st.sampled_from([1.0, 0.5, 1.5, 0.3]))
def test_graded_never_outranks_a_spike_and_gives_the_rate_back(current, beta, thr, mode, g):
    """Random membrane traces (6 images, P positions, T steps): the score orders images by spike number
    first, lies in [rate, rate + one spike), and the plain rate comes back from it bit for bit."""
    T, _, P = current.shape
    s = simulate(current, beta, thr, mode)
    score = graded_score(s.n_spikes, s.late_peak, s.first, T, thr, g, mem_sum=s.mem_sum)
    rate = plain_rate(s.n_spikes, T, g)
    N = s.n_spikes.double().sum(1)
    step = g / (P * T)                                            # the plain rate's smallest increment
    assert (score >= rate).all() and (score < rate + step).all()
    back = rate_from_score(score.numpy(), P, T, g)
    assert np.array_equal(back, rate.numpy())                     # exact, not approximately
    for i in range(6):
        for j in range(6):
            if N[i] > N[j]:
                assert score[i] > score[j]


@settings(max_examples=200, deadline=None)
@given(T=st.integers(1, 512), P=st.integers(1, 400), n=st.integers(0, 10 ** 6), g=st.floats(0.01, 100.0))
def test_worst_case_tie_stays_below_one_spike(T, P, n, g):
    """The largest possible tie (peak far above threshold, first spike at step 0 everywhere) with N spikes
    stays below the smallest possible tie (peak -inf, never fired) with N + 1 spikes."""
    N = n % (P * T)                                 # N + 1 spikes must fit in P positions x T steps
    lo = torch.zeros(1, P)
    lo[0, 0] = N                                    # spike numbers spread anyhow: only the sum matters
    hi = lo.clone()
    hi[0, -1] += 1
    best = graded_score(lo, torch.full((1, P), 1e38), torch.zeros(1, P, dtype=torch.int64), T, 1.0, g,
                        mem_sum=torch.full((1, P), float("inf")))
    worst = graded_score(hi, torch.full((1, P), float("-inf")), torch.full((1, P), T), T, 1.0, g,
                         mem_sum=torch.full((1, P), float("-inf")))
    assert worst[0] > best[0]
    assert rate_from_score(best.numpy(), P, T, g)[0] == plain_rate(lo, T, g)[0]
    assert rate_from_score(worst.numpy(), P, T, g)[0] == plain_rate(hi, T, g)[0]
    assert TIE_MAX < 1.0


def digits_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 16, 16, generator=g) < 0.3).float()      # sparse strokes: some units fire, some not
    return x * torch.rand(n, 1, 1, 1, generator=g) * 2


@pytest.mark.parametrize("layer, unit", [("spiking_out", 4), ("spiking2", 10), ("spiking1", 7), ("spiking0", 3)])
def test_real_network_reported_rate_is_the_plain_rate(layer, unit):
    """Embedded digits SNN, fast and reference paths: identical graded scores; reported == plain rate,
    exactly; a larger plain rate always means a larger score."""
    from mango.targets.digits import snn_digits
    x = digits_images(24, seed=1)
    fast = snn_digits(layer=layer, unit=unit)
    ref = snn_digits(layer=layer, unit=unit, fast=False)
    plain = snn_digits(layer=layer, unit=unit, readout="rate", fast=False)
    assert fast.uses_fast_path and not ref.uses_fast_path and fast.readout == "graded"
    with torch.no_grad():
        s_fast, s_ref, rate = fast(x), ref(x), plain(x)
    assert torch.equal(s_fast, s_ref)
    assert fast.reported_name == "rate" and plain.reported_name == "rate"
    assert np.array_equal(fast.reported(s_fast.numpy()), rate.numpy())
    assert np.array_equal(ref.reported(s_ref.numpy()), rate.numpy())
    r, s = rate.numpy(), s_fast.numpy()
    assert len(set(r.tolist())) > 1                                  # the images differ in rate
    assert ((r[:, None] > r[None, :]) <= (s[:, None] > s[None, :])).all()


@pytest.mark.parametrize("layer", ["spiking0", "spiking1", "spiking_out"])
def test_layer_graded_is_every_units_own_score(layer):
    """One run for the whole layer gives, column by column, what a target of that unit scores (fast and
    reference paths)."""
    from mango.targets.digits import snn_digits
    x = digits_images(12, seed=2)
    for fast in (True, False):
        L = snn_digits(layer=layer, unit=0, fast=fast).layer_graded(x)
        assert L.dtype == torch.float64 and L.shape[0] == 12
        for u in (1, L.shape[1] // 2, L.shape[1] - 1):
            assert torch.equal(L[:, u], snn_digits(layer=layer, unit=u, fast=fast)(x)), u
        assert len(set(L.flatten().tolist())) > L.shape[1]           # units and images differ


@pytest.mark.parametrize("layer, unit", [("spiking2", 10), ("spiking1", 7), ("spiking_out", 4)])
def test_targets_score_with_the_late_peak(layer, unit):
    """Embedded digits SNN: SpikingTarget and the one-liner's SpikingNetTarget (snn_unit) both score
    with the peak over the second half (ScanStats.late_peak), not the whole-run peak; on these images
    the two peaks give different scores, so the check tells them apart."""
    from mango.targets.digits import snn_digits
    from mango.targets.snn_net import snn_unit
    x = digits_images(24, seed=1)
    t = snn_digits(layer=layer, unit=unit)
    with torch.no_grad():
        _, st = t.stats(x)
        e = t.spec.elements

        def score(peak):
            return graded_score(e(st.n_spikes), e(peak), e(st.first), t.T, t.thr, t.g, mem_sum=e(st.mem_sum))
        late, whole = score(st.late_peak), score(st.peak)
        assert (late != whole).any()
        assert torch.equal(t(x), late)
        assert torch.equal(snn_unit(t.net, layer=layer, unit=unit, T=t.T)(x), late)


def test_paper_network_reported_rate(paper_weights):
    """Paper SNN on decoded random VQ-VAE codes: reported graded rate == plain rate (fast path and
    reference path), for a channel of spiking1 and an output neuron."""
    from mango import registry
    from mango.objective import Objective
    gen = registry.create("generator", "vqvae-cifar10", {"weights": str(paper_weights / "vqvae_cifar10.pt")})
    I = gen.space.sample(np.random.default_rng(3), 6)
    for layer, unit in [("spiking1", 5), ("final_spiking", 3)]:
        kw = {"weights": str(paper_weights), "layer": layer, "unit": unit, "T": 8, "backend": "torch"}
        graded = Objective(gen, registry.create("target", "snn-cifar10", kw))
        ref = Objective(gen, registry.create("target", "snn-cifar10", {**kw, "fast": False}))
        plain = Objective(gen, registry.create("target", "snn-cifar10", {**kw, "readout": "rate"}))
        y, yr, r = graded(I), ref(I), plain(I)
        assert np.array_equal(y, yr)
        assert np.array_equal(graded.target.reported(y), r) and np.array_equal(ref.target.reported(yr), r)


def test_silent_unit_gets_a_graded_score():
    """A unit that never fires on any of the images still gets scores that differ between them
    (the plain rate is flat 0 there)."""
    from mango.targets.digits import snn_digits
    x = digits_images(32, seed=2)
    probe = snn_digits(layer="spiking2", readout="rate")
    with torch.no_grad():
        counts, _ = probe.stats(x)
    silent = torch.nonzero(counts.sum(0) == 0).flatten()
    assert len(silent) > 0, "no silent spiking2 neuron on these images"
    t = snn_digits(layer="spiking2", unit=int(silent[0]))
    with torch.no_grad():
        s = t(x)
    assert (t.reported(s.numpy()) == 0).all()
    assert len(torch.unique(s)) > 16 and (s > 0).all() and (s < 1 / t.T).all()


def test_channel_near_miss_at_one_position_counts():
    """A silent channel (P = 25 positions): a near miss at one position ranks above the same mean
    closeness spread evenly over all positions (the peak term is half mean, half max over positions),
    and for one neuron (P = 1) the peak term is the squashed peak itself, bit for bit."""
    T, P, thr = 32, 25, 1.0
    peak_one = torch.full((1, P), -4.0, dtype=torch.float64)
    peak_one[0, 12] = 0.95                                                # one position almost fires
    target = (_squash_ref(0.95, thr) + (P - 1) * _squash_ref(-4.0, thr)) / P   # same mean of s(peak), spread evenly
    x = 2 * target - 1                                                    # s = 1/2 + x/2, x = r / (1 + |r|), r < 0
    v_even = thr + abs(thr) * x / (1 + x)                                    # the inverse of s at target
    peak_even = torch.full((1, P), v_even, dtype=torch.float64)
    none = torch.zeros(1, P)
    never = torch.full((1, P), T)
    mem = torch.full((1, P), -3.0 * T)
    one = graded_score(none, peak_one, never, T, thr, mem_sum=mem)
    even = graded_score(none, peak_even, never, T, thr, mem_sum=mem)
    assert abs(_squash_ref(v_even, thr) - target) < 1e-12
    assert one[0] > even[0] and (one[0] - even[0]) * P * T > 0.4 * 0.5 * (_squash_ref(0.95, thr) - target) * 0.99
    # one neuron: tie = 0.4 s(peak) + 0.2 s(mean membrane) exactly as documented
    p1 = torch.tensor([[0.7]], dtype=torch.float64)
    got = graded_score(torch.zeros(1, 1), p1, torch.full((1, 1), T), T, thr, mem_sum=torch.full((1, 1), -2.0 * T))
    want = (0.4 * _squash_ref(0.7, thr) + 0.2 * _squash_ref(-2.0, thr)) / T
    assert got[0].item() == pytest.approx(want, abs=1e-15)


def _squash_ref(v: float, thr: float) -> float:
    """The readout's squash s(v), written out (float)."""
    r = (v - thr) / abs(thr)
    return 0.5 + 0.5 * r / (1 + abs(r))


def test_onset_volley_does_not_outrank_sustained_drive():
    """The one-early-spike trap: two neurons with one spike each, both at step 0. A fires from a
    strong onset volley and is inhibited after it; B's onset is weaker, but its drive stays just
    below a second spike. The readout's peak over the second half ranks B above A; a peak over all
    steps would rank A (the trap) first, and the search would stall on images like A."""
    T = 16
    cur = np.zeros((T, 2, 1), np.float32)
    cur[0, 0, 0], cur[1, 0, 0], cur[2:, 0, 0] = 3.0, -2.5, -0.5          # A: volley, then inhibition
    cur[0, 1, 0], cur[1:, 1, 0] = 1.2, 0.09                               # B: sustained drive
    s = simulate(cur, 0.9, 1.0, 0)
    assert s.n_spikes.flatten().tolist() == [1.0, 1.0] and s.first.flatten().tolist() == [0, 0]
    assert s.peak[0, 0] > s.peak[1, 0] and s.late_peak[1, 0] > s.late_peak[0, 0]
    late = graded_score(s.n_spikes, s.late_peak, s.first, T, 1.0, mem_sum=s.mem_sum)
    assert late[1] > late[0]
    whole = graded_score(s.n_spikes, s.peak, s.first, T, 1.0, mem_sum=s.mem_sum)
    assert whole[0] > whole[1]                                            # what the trap looked like


def test_late_peak_is_the_max_over_the_second_half():
    """ScanStats.late_peak is the membrane's max over the steps t >= T // 2, for odd and even T."""
    for T in (1, 2, 7, 16):
        cur = np.random.default_rng(T).normal(0.0, 0.8, size=(T, 3, 2)).astype(np.float32)
        s = simulate(cur, 0.9, 1.0, 0)
        mem = torch.zeros(3, 2)
        trace = []
        for t in range(T):
            mem = leaky_update(mem, torch.from_numpy(cur[t]), torch.tensor(0.9), torch.tensor(1.0), 0)
            trace.append(mem)
        assert torch.equal(s.late_peak, torch.stack(trace[T // 2:]).amax(0))
        assert torch.equal(s.peak, torch.stack(trace).amax(0))


@pytest.mark.parametrize("layer, unit", [("spiking1", 7), ("spiking2", 10)])
def test_approach_says_how_close_each_image_came(layer, unit):
    """SpikingTarget.approach: spikes equal the plain rate's count, the late peak is the highest of the
    unit's positions, its position indexes the layer's map (row-major), peak_over_threshold = peak / thr."""
    from mango.targets.digits import snn_digits
    x = digits_images(12, seed=4)
    t = snn_digits(layer=layer, unit=unit)
    plain = snn_digits(layer=layer, unit=unit, readout="rate")
    with torch.no_grad():
        _, st = t.stats(x)
        rate = plain(x).numpy()
    near = t.approach(x)
    lp = st.late_peak[:, unit].double()
    assert len(near) == 12
    for b, d in enumerate(near):
        P = lp[b].numel()
        assert d["spikes"] == round(rate[b] * t.T * P / t.g)
        assert d["late_peak"] == float(lp[b].max()) and d["threshold"] == t.thr
        assert d["peak_over_threshold"] == pytest.approx(d["late_peak"] / t.thr)
        if lp.ndim > 1 and P > 1:
            assert d["map"] == list(lp.shape[1:]) and float(lp[b][tuple(d["position"])]) == d["late_peak"]
        else:
            assert d["position"] is None and d["map"] is None
    assert len({d["late_peak"] for d in near}) > 1                   # the images differ


def test_a_silent_run_reports_its_closest_approach(tmp_path, capsys):
    """`mango run` on a unit that stays silent prints how close its best image came, and result.json keeps it
    (the same numbers as the target's own stats of the best image)."""
    import json

    from mango.cli import main
    from mango.targets.digits import snn_digits
    x = digits_images(64, seed=5)
    probe = snn_digits(layer="spiking2", readout="rate")
    with torch.no_grad():
        counts, _ = probe.stats(x)
    silent = [int(u) for u in torch.nonzero(counts.sum(0) == 0).flatten()]
    out, found = tmp_path / "run", None
    for u in silent:          # the first neuron that a 20-query random search leaves silent
        args = ["run", "--generator", "vqvae-digits", "--target", "snn-digits", "--target-param", "layer=spiking2",
                "--target-param", f"unit={u}", "--optimizer", "random", "--budget", "20", "--out", str(out / str(u))]
        assert main(args) == 0
        printed = capsys.readouterr().out
        res = json.loads((out / str(u) / "result.json").read_text())
        if res["reported"]["best"] == 0:
            found = (u, printed, res)
            break
    assert found, "no spiking2 neuron stayed silent"
    u, printed, res = found
    near = res["approach"]
    t = snn_digits(layer="spiking2", unit=u)
    code = np.asarray(res["best_code"])[None]
    from mango import registry
    img = registry.create("generator", "vqvae-digits")(torch.as_tensor(code))
    assert near == t.approach(img)[0] and near["spikes"] == 0
    assert f"membrane peaked at {near['late_peak']:.3g} in the second half of T" in printed
    assert "closest approach" in printed
