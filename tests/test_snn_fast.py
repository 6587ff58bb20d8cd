"""The fast SNN path gives spikes identical to the snnTorch step loop."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import snntorch as snn
import torch
from torch import nn

from mango.errors import ConfigError
from mango.targets.snn_fast import FastSNN, fast_supported
from mango.targets.spiking import SpikingSequential, SpikingTarget, poisson_spikes, reference_run, spiking_layer_names


def assert_identical(net, x, T, sequence=False, **kw):
    names = spiking_layer_names(net)
    with torch.no_grad():
        ref = reference_run(net, x, T, names, record="spikes", sequence=sequence)
        fast = FastSNN(net, **kw).run(x, T, record_all=True, sequence=sequence)
        for n in names:
            assert ref[n].shape == fast[n].shape, n
            assert torch.equal(ref[n], fast[n]), f"layer {n}: {(ref[n] != fast[n]).sum().item()} spikes differ"
        last = names[-1]
        rc = reference_run(net, x, T, [last], sequence=sequence)[last]
        c, m = FastSNN(net, **kw).run(x, T, want_mem=True, sequence=sequence)
        assert torch.equal(c, rc[0]) and torch.equal(m, rc[1])
        # readout statistics (graded readout): identical in every layer, chunked time included
        for n in names:
            rs = reference_run(net, x, T, [n], record="stats", sequence=sequence)[n]
            fc, fs = FastSNN(net, **kw).run_stats(x, T, n, sequence=sequence)
            assert torch.equal(fc, rs[0]), n
            for f in ("n_spikes", "mem_sum", "peak", "late_peak", "first"):
                assert torch.equal(getattr(fs, f), getattr(rs[1], f)), (n, f)
            spk = (ref[n] != 0)
            assert torch.equal(fs.n_spikes, spk.sum(0).to(fs.n_spikes.dtype)), n
            fired = spk.any(0)
            first = torch.where(fired, spk.to(torch.int8).argmax(0), torch.full_like(fs.first, T))
            assert torch.equal(fs.first, first), n
    return ref


@pytest.mark.parametrize("T", [1, 4, 11])
def test_paper_snn_identical(paper_weights, T):
    from mango.targets.paper_snn import load_paper_snn
    net = load_paper_snn(paper_weights)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(T)) * 1.5
    ref = assert_identical(net, x, T, backend="torch", max_elems=200 * 14 * 14 * 2 * 4)  # forces time chunks
    assert ref["spiking0"].sum() > 0 and ref["spiking1"].sum() > 0


def random_net(seed: int) -> SpikingSequential:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    resets = ["subtract", "zero", "none"]

    def lk(i):
        beta = float(torch.rand((), generator=g) * 0.6 + 0.4)
        thr = float(torch.rand((), generator=g) * 0.8 + 0.4)
        return snn.Leaky(beta=beta, threshold=thr, reset_mechanism=resets[(seed + i) % 3],
                         graded_spikes_factor=1.0 if i else 0.5 + seed % 2)
    c1, c2 = 3 + seed % 3, 4 + seed % 2
    net = SpikingSequential(OrderedDict([
        ("conv0", nn.Conv2d(2, c1, 3, padding=1)), ("act0", nn.Tanh()), ("s0", lk(0)),
        ("conv1", nn.Conv2d(c1, c2, 3, stride=2)), ("pool", nn.AvgPool2d(2)), ("s1", lk(1)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(c2 * 9, 7)), ("s2", lk(2)),
        ("out", nn.Linear(7, 3)), ("s3", lk(3)),
    ])).eval()
    with torch.no_grad():   # strong enough weights that every layer spikes
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    return net


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_nets_identical(seed):
    net = random_net(seed)
    x = torch.randn(5, 2, 14, 14, generator=torch.Generator().manual_seed(seed)) * 2
    for T in (1, 6, 23):
        ref = assert_identical(net, x, T, backend="torch")
    assert all(ref[n].sum() > 0 for n in ("s0", "s1"))
    xs = poisson_spikes(torch.rand(4, 2, 14, 14), 9, seed=seed)        # time-varying input
    assert_identical(net, xs, 9, sequence=True, backend="torch", max_elems=400)


def test_compiled_kernel_identical():
    """torch.compile neuron kernel (C++ via inductor): same spikes as the step loop."""
    pytest.importorskip("torch._inductor")
    net = random_net(1)
    x = torch.randn(4, 2, 14, 14, generator=torch.Generator().manual_seed(9)) * 2
    fast = FastSNN(net, backend="compile", unroll=4)
    names = spiking_layer_names(net)
    with torch.no_grad():
        ref = reference_run(net, x, 8, names, record="spikes")
        out = fast.run(x, 8, record_all=True)
    assert fast.kernel_in_use() == "compile"
    for n in names:
        assert torch.equal(ref[n], out[n]), n


def test_auto_backend_answers_at_once_then_switches_to_the_compiled_kernel():
    """backend="auto": the first calls run the exact pure-torch kernel while a child process compiles;
    once loaded and verified, the compiled kernel runs; every result is bit-identical to the step loop."""
    pytest.importorskip("torch._inductor")
    net = random_net(3)
    x = torch.randn(5, 2, 14, 14, generator=torch.Generator().manual_seed(3)) * 2
    last = spiking_layer_names(net)[-1]
    fast = FastSNN(net, backend="auto", unroll=4)
    fast.compile_nice = 0                   # the test waits for it: no need to yield the CPU
    with torch.no_grad():
        ref = reference_run(net, x, 10, [last])[last]
        first = fast.run(x, 10, want_mem=True)
        assert fast.kernel_in_use() == "torch"
        assert fast.wait_compiled(timeout=900)
        later = fast.run(x, 10, want_mem=True)
        assert fast.kernel_in_use() == "compile"
        other_batch = fast.run(x[:3], 10, want_mem=True)      # same plan (time chunk): no new compile
    assert fast.kernel_in_use() == "compile"
    for c, m in (first, later):
        assert torch.equal(c, ref[0]) and torch.equal(m, ref[1])
    assert torch.equal(other_batch[0], ref[0][:3]) and torch.equal(other_batch[1], ref[1][:3])


def test_target_fast_equals_slow_and_stops_early():
    net = random_net(2)
    x = torch.randn(6, 2, 14, 14) * 2
    for layer, unit, pos in [("s3", 1, None), ("s1", 2, (0, 1)), ("s0", 0, None), ("s1", 1, None)]:
        for readout in ("graded", "rate", "count"):
            a = SpikingTarget(net, layer, unit, pos, T=12, fast=True, backend="torch", readout=readout)
            b = SpikingTarget(net, layer, unit, pos, T=12, fast=False, readout=readout)
            assert a.uses_fast_path and not b.uses_fast_path
            assert torch.equal(a(x), b(x)), (layer, unit, pos, readout)      # identical statistics
        with pytest.warns(DeprecationWarning, match="tie_break"):
            a = SpikingTarget(net, layer, unit, pos, T=12, fast=True, backend="torch", tie_break=0.01)
            b = SpikingTarget(net, layer, unit, pos, T=12, fast=False, tie_break=0.01)
        assert torch.allclose(a(x), b(x), atol=1e-6, rtol=0)


def test_unsupported_networks():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = snn.Leaky(beta=0.5)

        def forward(self, x):
            return self.lif(x)[0]
    assert "not an nn.Sequential" in fast_supported(Custom())
    syn = SpikingSequential(OrderedDict([("fc", nn.Linear(2, 2)), ("syn", snn.Synaptic(alpha=0.5, beta=0.5))]))
    assert "Synaptic" in fast_supported(syn)
    with pytest.raises(ConfigError, match="cannot run"):
        FastSNN(Custom())
    t = SpikingTarget(Custom(), T=4)              # falls back to the step loop
    assert not t.uses_fast_path and t(torch.full((1, 3), 0.6)).shape == (1,)
    with pytest.raises(ConfigError, match="backend"):
        FastSNN(random_net(0), backend="cuda-magic")


def test_compiled_kernel_survives_many_variants():
    """More (steps, reset mode, constant input, membrane sum) variants in one process than dynamo's
    per-code-object recompile limit (8): each compiles to its own kernel, none fails or falls back."""
    pytest.importorskip("torch._inductor")
    from mango.targets.snn_fast import leaky_scan

    beta, thr, g = torch.tensor(0.9), torch.tensor(1.0), torch.tensor(1.0)
    cur = torch.rand(12, 5, generator=torch.Generator().manual_seed(0)) * 2
    n = 0
    for mode in (0, 1, 2):
        for k in (1, 2, 3):
            for with_msum in (False, True):
                m0 = torch.zeros(5)
                ref = leaky_scan(cur[:k], m0, beta, thr, g, mode, k, msum=torch.zeros(5) if with_msum else None)
                out = leaky_scan(cur[:k], m0, beta, thr, g, mode, k, msum=torch.zeros(5) if with_msum else None,
                                 backend="compile", unroll=k)
                assert torch.equal(ref[1], out[1]) and torch.equal(ref[0], out[0])
                n += 1
    assert n == 18


def test_dropped_network_ends_its_compile_child():
    """A worker that builds one network per run (compare, scan) must not collect compile children:
    each child ends with the network that started it (they starved at nice 19 and piled up, ~300 MB
    each, in the search-quality benchmark)."""
    import gc
    import signal
    net = random_net(4)
    x = torch.randn(3, 2, 14, 14, generator=torch.Generator().manual_seed(4))
    fast = FastSNN(net, backend="auto", unroll=4)
    with torch.no_grad():
        fast.run(x, 6)
    proc = fast._compile_proc
    assert proc is not None and proc.poll() is None, "expected a running compile child"
    del fast
    gc.collect()
    assert proc.poll() == -signal.SIGTERM  # terminated (already waited for), not finished on its own
