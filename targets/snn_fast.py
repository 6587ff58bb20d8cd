"""Exact fast evaluation of feed-forward spiking networks (snnTorch ``Leaky``).

The snnTorch step loop runs every layer once per time step, so a static image
pays for the layers before the first spiking layer ``T`` times, and each neuron
update is ~8 small elementwise kernels. :class:`FastSNN` evaluates the *same*
network layer by layer over time instead:

1. layers before the first spiking layer run once (static input) or once over
   all ``T * B`` inputs (a sequence, e.g. Poisson spikes);
2. each ``Leaky`` layer runs its recurrence over a chunk of time steps as one
   fused pass (``torch.compile`` of ``unroll`` unrolled steps, or a pure-torch
   loop as fallback), producing spikes ``[Tc, B, ...]``;
3. the stateless layers between spiking layers run on all ``Tc * B`` spike maps
   in one batched call;
4. layers after the requested layer are skipped.

Time is processed in chunks of ``Tc`` steps (membranes carried across chunks) so
memory stays bounded (``max_elems``).

Readout statistics (:meth:`FastSNN.run_stats`, for the graded readout of
:mod:`mango.targets.spiking`): for the requested layer the scan also keeps, per
neuron, the spike number, the membrane sum, the peak membrane (over all steps and
over the second half of them) and the first step with a spike (:class:`ScanStats`).
That layer's recurrence then runs the pure-torch scan, which shares
:func:`leaky_update` with the compiled kernel, so spikes and membranes stay
bit-identical to the step loop (the tests compare every statistic).

Exactness: the membrane update does the same float32 operations in the same
order as snnTorch 1.0's ``Leaky`` (``beta.clamp(0, 1) * mem + input``, then
``- reset * threshold`` with ``reset = mem_prev > threshold``; spike
``mem > threshold`` times ``graded_spikes_factor``), and inductor compiles
without FP contraction or reassociation, so given the same layer inputs the spikes
are bit-identical. The batched stateless layers compute each sample
independently, but a BLAS or convolution library may pick a different kernel
(and so a different summation order) for a different batch size: MKL does for
matrix products with fewer than ~16 rows on AVX-512 machines, and so do some
GPU convolution algorithms. So before the first batched call of each group of
stateless layers with a new shape, :class:`FastSNN` probes it once: random
spike maps of that shape through the batched call and through per-step calls of
``B`` samples (the step loop's shapes); if the two differ in any bit, that group
is run per step from then on (``time_batch=1`` forces this everywhere). Each step's input is then
passed in memory of its own, as the step loop passes it: on an AMD EPYC machine (AVX-512) a
``Linear`` gave other bits on a time step sliced out of ``[T, B, ...]`` than on the same values
in a tensor of their own, so the probe's per-step calls take such copies too. The tests
check bit-identical spikes and membrane sums on the paper network and on random
networks at several batch sizes.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mango.errors import ConfigError, choices_hint

__all__ = ["FastSNN", "ScanStats", "fast_supported", "leaky_scan", "leaky_update"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "compile", "torch")
_RESETS = {0: "subtract", 1: "zero", 2: "none"}


def _leaky_cls():
    import snntorch as snn
    return snn.Leaky


def _neuron_problem(m: nn.Module) -> str | None:
    """Why the fast path cannot run this spiking module (None: it can)."""
    from snntorch._neurons.neurons import SpikingNeuron
    if not isinstance(m, SpikingNeuron):
        return None
    if type(m) is not _leaky_cls():
        return f"{type(m).__name__} neurons (only snntorch.Leaky)"
    if getattr(m, "inhibition", False):
        return "Leaky with inhibition"
    if getattr(m, "state_quant", False):
        return "Leaky with state_quant"
    if not getattr(m, "reset_delay", True):
        return "Leaky with reset_delay=False"
    for name in ("beta", "threshold", "graded_spikes_factor"):
        v = getattr(m, name)
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            return f"non-scalar Leaky {name}"
    if int(m.reset_mechanism_val) not in _RESETS:
        return f"reset mechanism {int(m.reset_mechanism_val)}"
    return None


def fast_supported(net: nn.Module) -> str | None:
    """``None`` when :class:`FastSNN` can run ``net``, else the reason it cannot.

    Supported: an ``nn.Sequential`` (e.g. :class:`~mango.targets.spiking.SpikingSequential`)
    whose children are snnTorch ``Leaky`` neurons (scalar beta/threshold, no
    inhibition/quantisation) and stateless layers (anything else: conv, pool,
    linear, flatten, activation functions, dropout in eval mode).
    """
    if not isinstance(net, nn.Sequential):
        return f"{type(net).__name__} is not an nn.Sequential"
    n_spiking = 0
    for name, m in net.named_children():
        why = _neuron_problem(m)
        if why:
            return f"layer {name!r}: {why}"
        if _is_neuron(m):
            n_spiking += 1
        else:
            for sub in m.modules():
                if _is_neuron(sub):
                    return f"layer {name!r} nests spiking neurons"
            if m.training and any(isinstance(s, nn.modules.dropout._DropoutNd) for s in m.modules()):
                return f"layer {name!r} has dropout in training mode"
    if n_spiking == 0:
        return "no spiking layers"
    return None


def _is_neuron(m: nn.Module) -> bool:
    from snntorch._neurons.neurons import SpikingNeuron
    return isinstance(m, SpikingNeuron)


# ---------------------------------------------------------------------------
# the Leaky recurrence
# ---------------------------------------------------------------------------

def _fresh(x: torch.Tensor) -> torch.Tensor:
    """``x`` in memory of its own when it is a view into a larger tensor (a time step of ``[T, B, ...]``).

    A library's kernel can depend on where the data starts, not only on shapes: on an AMD EPYC machine
    (AVX-512) a ``Linear`` on a slice of a larger tensor summed in another order than on the same values
    in a tensor of their own, as the step loop passes them (fresh allocations are 64-byte aligned).
    """
    return x.clone() if x.storage_offset() else x


def leaky_update(mem: torch.Tensor, c: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                 mode: int) -> torch.Tensor:
    """One Leaky membrane update (snnTorch 1.0's float32 operations, in its order).

    ``mode`` 0 subtract: ``(beta*mem + c) - reset*thr``; 1 zero: ``beta*((1-reset)*mem) + c``;
    2 none: ``beta*mem + c``; ``reset = mem > thr`` of the *previous* membrane. The spike
    of the step is ``new_mem > thr``. Used by the exact scan, its statistics and the
    differentiable surrogate forward, so all three share the same arithmetic.
    """
    if mode == 0:      # subtract: (beta*mem + in) - reset*thr, reset from the previous membrane
        reset = mem > thr
        mem = beta * mem + c
        return torch.where(reset, mem - thr, mem)
    if mode == 1:      # zero: mem = (1 - reset) * mem, then beta*mem + in
        reset = mem > thr
        return beta * torch.where(reset, mem * 0.0, mem) + c
    return beta * mem + c  # none


def _steps(cur: torch.Tensor, mem: torch.Tensor, msum: torch.Tensor | None, beta: torch.Tensor,
           thr: torch.Tensor, g: torch.Tensor, k: int, mode: int, const: bool
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``k`` Leaky steps. ``cur``: ``[N]`` (const) or ``[k, N]``; returns (mem [N], spk [k, N], msum)."""
    spks = []
    for t in range(k):
        c = cur if const else cur[t]
        mem = leaky_update(mem, c, beta, thr, mode)
        spks.append((mem > thr).to(mem.dtype) * g)
        if msum is not None:
            msum = msum + mem
    return mem, torch.stack(spks), msum


def _steps_stats(cur: torch.Tensor, mem: torch.Tensor, stats: "ScanStats", beta: torch.Tensor,
                 thr: torch.Tensor, g: torch.Tensor, k: int, mode: int, const: bool, t0: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_steps` (pure torch, same update) that also updates the readout statistics in place.

    ``t0`` is the absolute index of the first of these ``k`` steps (for first-spike times).
    Returns ``(mem [N], spikes [k, N])``.
    """
    spks = []
    for t in range(k):
        c = cur if const else cur[t]
        mem = leaky_update(mem, c, beta, thr, mode)
        fired = mem > thr
        spks.append(fired.to(mem.dtype) * g)
        stats.update(t0 + t, mem, fired)
    return mem, torch.stack(spks)


@dataclass
class ScanStats:
    """Per-neuron statistics of one spiking layer accumulated over time (all ``[N]``, flat).

    Attributes:
        n_spikes: number of steps with a spike (float32, integer values in [0, T]).
        mem_sum: sum over steps of the membrane after each update.
        peak: max over steps of the membrane after each update (``-inf`` before the first step).
        first: index (0-based) of the first step with a spike; ``T`` (the ``never`` value) when none.
        never: ``T``, the number of steps.
        late_peak: max of the membrane over the steps ``t >= T // 2`` (the second half, after the
            onset transient; ``-inf`` until step ``T // 2``).
    """

    n_spikes: torch.Tensor
    mem_sum: torch.Tensor
    peak: torch.Tensor
    first: torch.Tensor
    never: int
    late_peak: torch.Tensor

    @staticmethod
    def zeros(shape: int | tuple[int, ...], T: int, dtype: torch.dtype, device: torch.device | str) -> "ScanStats":
        """Statistics before the first step, for neurons of ``shape``, over ``T`` steps."""
        shape = (int(shape),) if isinstance(shape, int) else tuple(shape)
        return ScanStats(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device),
                         torch.full(shape, float("-inf"), dtype=dtype, device=device),
                         torch.full(shape, int(T), dtype=torch.int64, device=device), int(T),
                         torch.full(shape, float("-inf"), dtype=dtype, device=device))

    def update(self, t: int, mem: torch.Tensor, fired: torch.Tensor) -> None:
        """Fold in step ``t``: membrane ``mem`` after the update, ``fired = mem > thr`` (bool)."""
        self.n_spikes = self.n_spikes + fired.to(self.n_spikes.dtype)
        self.mem_sum = self.mem_sum + mem
        self.peak = torch.maximum(self.peak, mem)
        if t >= self.never // 2:
            self.late_peak = torch.maximum(self.late_peak, mem)
        self.first = torch.where(fired & (self.first == self.never), torch.full_like(self.first, t), self.first)

    def reshape(self, *shape: int) -> "ScanStats":
        return ScanStats(self.n_spikes.reshape(shape), self.mem_sum.reshape(shape), self.peak.reshape(shape),
                         self.first.reshape(shape), self.never, self.late_peak.reshape(shape))


_COMPILED: dict[tuple, Any] = {}

#: the compile child (backend "auto"): compiles the listed (k, mode, const, with_msum) variants
#: on dummy inputs into inductor's on-disk cache and exits
_CHILD = """
import os, sys, json
parent, nice = int(sys.argv[4]), int(sys.argv[5])
try:                                # Linux: end with the parent, however it ends
    import ctypes, signal
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    sys.exit(0)
if nice and hasattr(os, "nice"):
    os.nice(nice)                   # the parent's evaluations come first
import torch
torch.set_num_threads(1)
from mango.targets.snn_fast import _compiled
variants, dtype, device = json.loads(sys.argv[1]), getattr(torch, sys.argv[2]), torch.device(sys.argv[3])
kw = dict(dtype=dtype, device=device)
beta, thr, g = torch.tensor(0.9, **kw), torch.tensor(1.0, **kw), torch.tensor(1.0, **kw)
with torch.no_grad():
    for k, mode, const, with_msum in variants:
        cur = torch.rand((64,) if const else (k, 64), **kw)
        mem = torch.zeros(64, **kw)
        fn = _compiled(k, mode, bool(const), bool(with_msum))
        fn(cur, mem, torch.zeros(64, **kw), beta, thr, g) if with_msum else fn(cur, mem, beta, thr, g)
"""

#: compile children still running; terminated at exit (their work is only a cache)
_CHILDREN: set[subprocess.Popen] = set()


def _stop(p: subprocess.Popen) -> None:
    """Terminate one compile child (its work is only a cache) and forget it."""
    _CHILDREN.discard(p)
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


@atexit.register
def _stop_children() -> None:
    for p in list(_CHILDREN):
        _stop(p)


def _compiled(k: int, mode: int, const: bool, with_msum: bool):
    key = (k, mode, const, with_msum)
    fn = _COMPILED.get(key)
    if fn is None:
        def f(cur, mem, msum, beta, thr, g):
            return _steps(cur, mem, msum, beta, thr, g, k, mode, const)

        def f_nomsum(cur, mem, beta, thr, g):
            m, s, _ = _steps(cur, mem, None, beta, thr, g, k, mode, const)
            return m, s
        py = f if with_msum else f_nomsum
        # dynamo keeps at most ``recompile_limit`` (8) compiled variants per *code object*, and
        # every closure made here shares one: a process needing a 9th (k, mode, const, msum) variant
        # would fail (fullgraph) or fall back. A code object of its own per variant avoids that.
        py.__code__ = py.__code__.replace(co_name=f"leaky_k{k}_m{mode}_c{int(const)}_s{int(with_msum)}")
        fn = torch.compile(py, dynamic=True, fullgraph=True)
        _COMPILED[key] = fn
    return fn


def leaky_scan(cur: torch.Tensor, mem: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
               g: torch.Tensor, mode: int, steps: int, msum: torch.Tensor | None = None,
               const: bool = False, backend: str = "torch", unroll: int = 8
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run ``steps`` Leaky updates.

    Args:
        cur: input current, ``[N]`` when ``const`` (same at every step) else ``[steps, N]``.
        mem: membrane ``[N]`` before the first step.
        beta: clamped decay (0-dim tensor), thr: threshold, g: graded spike factor.
        mode: reset mechanism (0 subtract, 1 zero, 2 none).
        msum: running sum of membranes ``[N]`` (updated) or None.
        backend: ``"compile"`` (fused kernel per ``unroll`` steps) or ``"torch"``.

    Returns:
        ``(mem [N], spikes [steps, N], msum)``.
    """
    if backend == "torch":
        return _steps(cur, mem, msum, beta, thr, g, steps, mode, const)
    outs = []
    t = 0
    while t < steps:
        k = unroll if steps - t >= unroll else 1
        c = cur if const else cur[t:t + k]
        if msum is not None:
            mem, s, msum = _compiled(k, mode, const, True)(c, mem, msum, beta, thr, g)
        else:
            mem, s = _compiled(k, mode, const, False)(c, mem, beta, thr, g)
        outs.append(s)
        t += k
    return mem, (outs[0] if len(outs) == 1 else torch.cat(outs)), msum


# ---------------------------------------------------------------------------
# the network plan
# ---------------------------------------------------------------------------

@dataclass
class _Stage:
    name: str                      # spiking layer name
    neuron: nn.Module
    post: list[nn.Module] = field(default_factory=list)   # stateless layers after it


class FastSNN:
    """Layer-by-layer-over-time evaluation of a feed-forward SNN with identical spikes.

    Args:
        net: a supported ``nn.Sequential`` (see :func:`fast_supported`).
        backend: ``"compile"`` (``torch.compile`` fused neuron kernel, compiled before the
            first call returns; needs a C compiler on CPU or Triton on GPU), ``"torch"``
            (pure-torch loop) or ``"auto"``: answer with the exact pure-torch kernel at once
            while a child process (at niceness :attr:`compile_nice`) compiles the fused
            kernel variants this call pattern needs (T, layers, membrane, input kind, the
            batch's time chunking) into inductor's disk cache; once it has finished, the
            next call loads them from that cache, checks them bit-identical to the torch
            kernel on a probe batch, and uses them from then on (a compile failure or a
            mismatch keeps the torch kernel, with a logged warning). Results never depend on
            which kernel ran: both are exact. A child still running when this process exits
            is terminated (its work is only a cache). See :meth:`kernel_in_use` and
            :meth:`wait_compiled`.
        unroll: time steps per fused kernel call.
        max_elems: bound on the elements of the largest intermediate tensor
            (sets the time chunk ``Tc``; default 2**25, i.e. 128 MB in float32).
        time_batch: time steps per call of the stateless layers (None: the whole chunk
            where a one-off probe shows the batched call bit-identical to per-step calls,
            else 1; 1 always calls them with the step loop's shapes).
        neuron_threads: CPU threads for the (memory-bound) neuron kernels; ``None`` (default)
            keeps torch's setting, as the convolutions do (``mango compare`` workers set 1).
            Measured on the paper SNN with 2 idle cores, side by side: 2 threads were 19-23 %
            faster than 1 (T=32/128, batch 16/64); 1 can win when other processes load the
            cores, since each small kernel ends in an OpenMP barrier.
    """

    #: niceness of the background compile process (backend "auto"): evaluations come first
    compile_nice: int = 19

    def __init__(self, net: nn.Module, backend: str = "auto", unroll: int = 8,
                 max_elems: int = 2 ** 25, time_batch: int | None = None,
                 neuron_threads: int | None = None) -> None:
        why = fast_supported(net)
        if why is not None:
            raise ConfigError(f"the fast SNN path cannot run this network: {why}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown SNN backend {backend!r}; {choices_hint(backend, BACKENDS)}")
        self.net = net
        self.backend = backend
        self.unroll = max(1, int(unroll))
        self.max_elems = int(max_elems)
        self.time_batch = None if time_batch is None else max(1, int(time_batch))
        self.neuron_threads = None if neuron_threads is None else max(1, int(neuron_threads))
        self.pre: list[nn.Module] = []
        self.stages: list[_Stage] = []
        for name, m in net.named_children():
            if _is_neuron(m):
                self.stages.append(_Stage(name, m))
            elif self.stages:
                self.stages[-1].post.append(m)
            else:
                self.pre.append(m)
        self.names = [s.name for s in self.stages]
        self._sizes: dict[tuple, int] = {}
        self._batch_ok: dict[tuple, bool] = {}
        # backend "auto": call plans whose compiled kernels are verified ("ready"), being built
        # ("pending") or unusable ("failed"); one compile process at a time
        self._compile_state: dict[tuple, str] = {}
        self._compile_proc: subprocess.Popen | None = None
        self._compile_plan: tuple | None = None
        self._tls = threading.local()         # the probe's planned batch size (see _chunk)
        self._last_kernel = "none"

    # -- helpers -----------------------------------------------------------
    def _backend(self, key: tuple | None = None) -> str:
        if self.backend != "auto":
            return self.backend
        return "compile" if self._compile_state.get(key) == "ready" else "torch"

    def kernel_in_use(self) -> str:
        """The neuron kernel the last :meth:`run` used: ``"compile"``, ``"torch"`` (or ``"none"`` yet)."""
        return self._last_kernel

    def _variants(self, T: int, tc: int, last: int, layer: str, want_mem: bool, sequence: bool
                  ) -> list[tuple[int, int, bool, bool]]:
        """The compiled kernel variants ``(k, mode, const, with_msum)`` a call plan runs (see :meth:`_run`)."""
        ks = {self.unroll, *([1] if T % self.unroll else [])} if tc >= self.unroll else {1}
        out = set()
        for i, st in enumerate(self.stages[:last + 1]):
            const = i == 0 and not sequence
            msum = want_mem and st.name == layer
            out.update((k, int(st.neuron.reset_mechanism_val), const, msum) for k in ks)
        return sorted(out)

    def _compile_in_background(self, key: tuple, B: int, x: torch.Tensor, T: int, tc: int, last: int,
                               layer: str, want_mem: bool, sequence: bool) -> None:
        """Start compiling this call plan's kernel variants in a child process (backend ``"auto"``).

        The child compiles them into inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``)
        and exits; :meth:`_poll_compile` then loads them here from that cache (seconds
        instead of minutes) between two calls, checks on a probe batch that they give
        bit-identical results, and only then switches. No thread runs in this process, so
        nothing is left half-done at exit; a child still running then is terminated.
        """
        if self._compile_proc is not None or self._compile_state.get(key):
            return
        variants = self._variants(T, tc, last, layer, want_mem, sequence)
        dtype = str(x.dtype).replace("torch.", "")
        cmd = [sys.executable, "-c", _CHILD, json.dumps(variants), dtype, str(x.device), str(os.getpid()),
               str(int(self.compile_nice))]
        try:
            self._compile_log = tempfile.TemporaryFile()
            self._compile_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=self._compile_log)
        except OSError as e:
            self._compile_state[key] = "failed"
            log.warning("cannot start the neuron-kernel compile process (%s); staying on the exact "
                        "pure-torch kernel", e)
            return
        _CHILDREN.add(self._compile_proc)
        # a process that builds many networks in turn (compare/scan workers) must not collect
        # children: this one ends with the network that started it
        weakref.finalize(self, _stop, self._compile_proc)
        self._compile_state[key] = "pending"
        xs = (x[:, :2] if sequence else x[:2]).detach().clone()
        self._compile_plan = (key, B, xs, T, last, layer, want_mem, sequence)
        log.info("compiling %d neuron-kernel variant(s) in process %d; using the exact pure-torch kernel "
                 "until they are ready", len(variants), self._compile_proc.pid)

    def _poll_compile(self) -> None:
        """If the compile child has finished: load its kernels, verify them, switch (backend ``"auto"``)."""
        proc = self._compile_proc
        if proc is None or proc.poll() is None:
            return
        self._compile_proc = None
        _CHILDREN.discard(proc)
        key, B, xs, T, last, layer, want_mem, sequence = self._compile_plan
        self._compile_plan = None
        self._compile_log.seek(0)
        err = self._compile_log.read().decode(errors="replace")
        self._compile_log.close()
        if proc.returncode != 0:
            self._compile_state[key] = "failed"
            log.warning("torch.compile neuron kernel unavailable (compile process exit %s: %s); staying on "
                        "the exact pure-torch kernel", proc.returncode, err.strip().splitlines()[-1:] or "")
            return
        self._tls.plan_batch = B
        try:
            with torch.no_grad():
                ref = self._run(xs, T, last, layer, want_mem, sequence, False, "torch")
                got = self._run(xs, T, last, layer, want_mem, sequence, False, "compile")
            same = torch.equal(ref[0], got[0]) and (ref[1] is None or torch.equal(ref[1], got[1]))
        except Exception as e:   # an inductor error here
            self._compile_state[key] = "failed"
            log.warning("torch.compile neuron kernel unavailable (%s: %s); staying on the exact pure-torch "
                        "kernel", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return
        finally:
            self._tls.plan_batch = None
        self._compile_state[key] = "ready" if same else "failed"
        if same:
            log.info("compiled neuron kernel ready (T=%d, layer %s); switching to it", T, layer)
        else:
            log.warning("compiled neuron kernel differs from the pure-torch kernel on a probe batch "
                        "(T=%d, layer %s); staying on the pure-torch kernel", T, layer)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for a running background compile and load it; True if none is running any more."""
        proc = self._compile_proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        self._poll_compile()
        return self._compile_proc is None

    @staticmethod
    def _apply(mods: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        for m in mods:
            x = m(x)
            if isinstance(x, tuple):
                x = x[0]
        return x

    def _batched_is_exact(self, mods: list[nn.Module], s: torch.Tensor) -> bool:
        """Does one call on ``[Tc * B, ...]`` give the same bits as ``Tc`` calls on ``[B, ...]``?

        Probed once per (layer group, shape, dtype, device) with random binary maps of
        the shape of ``s`` (kernel choice depends on shapes and on where the data starts, not on
        values; the per-step calls get each step in memory of its own, as the step loop does), then cached.
        """
        Tc, B = s.shape[:2]
        key = (id(mods), tuple(s.shape), s.dtype, s.device)
        ok = self._batch_ok.get(key)
        if ok is None:
            g = torch.Generator(device="cpu").manual_seed(0)
            probe = (torch.rand(s.shape, generator=g) < 0.5).to(dtype=s.dtype, device=s.device)
            with torch.no_grad():
                full = self._apply(mods, probe.reshape(Tc * B, *s.shape[2:]))
                per = torch.cat([self._apply(mods, _fresh(probe[t])) for t in range(Tc)])
            ok = full.shape == per.shape and torch.equal(full, per)
            self._batch_ok[key] = ok
            if not ok:
                log.debug("stateless layers %s: batch of %d differs from %d x %d; running per step",
                          [type(m).__name__ for m in mods], Tc * B, Tc, B)
        return ok

    def _time_batch(self, mods: list[nn.Module], s: torch.Tensor) -> int:
        """Time steps per call of ``mods`` on ``s`` ``[Tc, B, ...]`` (see :meth:`_batched_is_exact`)."""
        Tc = s.shape[0]
        if self.time_batch is not None:
            return self.time_batch
        return Tc if Tc == 1 or self._batched_is_exact(mods, s) else 1

    def _post(self, mods: list[nn.Module], s: torch.Tensor) -> torch.Tensor:
        """Stateless layers on spikes ``[Tc, B, ...]`` -> ``[Tc, B, ...]``."""
        if not mods:
            return s
        Tc, B = s.shape[:2]
        tb = self._time_batch(mods, s)
        outs = []
        for t0 in range(0, Tc, tb):
            chunk = s[t0:t0 + tb]
            y = self._apply(mods, _fresh(chunk.reshape(chunk.shape[0] * B, *chunk.shape[2:])))
            outs.append(y.reshape(chunk.shape[0], B, *y.shape[1:]))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _scan(self, st: _Stage, cur: torch.Tensor, mem: torch.Tensor, msum: torch.Tensor | None,
              steps: int, const: bool, backend: str, stats: ScanStats | None = None, t0: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        n = st.neuron
        beta = n.beta.detach().clamp(0, 1).to(cur.dtype).reshape(())
        thr = n.threshold.detach().to(cur.dtype).reshape(())
        g = n.graded_spikes_factor.detach().to(cur.dtype).reshape(())
        mode = int(n.reset_mechanism_val)
        shape = cur.shape if const else cur.shape[1:]
        flat_cur = cur.reshape(-1) if const else cur.reshape(cur.shape[0], -1)
        nt = self.neuron_threads if cur.device.type == "cpu" else None
        old = torch.get_num_threads()
        if nt is not None and nt != old:
            torch.set_num_threads(nt)
        try:
            if stats is not None:   # readout statistics: the pure-torch scan (same update, same bits)
                mem, spk = _steps_stats(flat_cur, mem, stats, beta, thr, g, steps, mode, const, t0)
            else:
                mem, spk, msum = leaky_scan(flat_cur, mem, beta, thr, g, mode, steps, msum=msum, const=const,
                                            backend=backend, unroll=self.unroll)
        finally:
            if nt is not None and nt != old:
                torch.set_num_threads(old)
        return mem, spk.reshape(steps, *shape), msum

    def _chunk(self, per_sample: int, B: int, T: int) -> int:
        B = getattr(self._tls, "plan_batch", None) or B     # background compile plans for the caller's batch
        return max(1, min(T, self.max_elems // max(1, per_sample * B)))

    # -- main entry ----------------------------------------------------------
    def run(self, x: torch.Tensor, T: int, layer: str | None = None, want_mem: bool = False,
            sequence: bool = False, record_all: bool = False
            ) -> Any:
        """Evaluate ``T`` steps.

        Args:
            x: static input ``[B, ...]`` or, with ``sequence``, ``[T, B, ...]``.
            layer: spiking layer to read (default: the last); later layers are skipped.
            want_mem: also return the membrane sum over time.
            record_all: return ``{layer: spikes [T, B, *S]}`` for every spiking layer (tests).

        Returns:
            ``(count [B, *S], mem_sum [B, *S] or None)`` of ``layer``, or the dict with ``record_all``.
        """
        return self._dispatch(x, T, layer, want_mem, sequence, record_all, False)

    def run_stats(self, x: torch.Tensor, T: int, layer: str | None = None, sequence: bool = False
                  ) -> tuple[torch.Tensor, ScanStats]:
        """Evaluate ``T`` steps and return the readout statistics of ``layer`` (default: the last).

        Returns:
            ``(count [B, *S], stats)``: the spike-value sum (as :meth:`run`) and a
            :class:`ScanStats` reshaped to ``[B, *S]`` (spike numbers, membrane sum, peak
            membrane, first-spike step). Spikes and membranes are bit-identical to the
            snnTorch step loop (the target layer's recurrence runs the pure-torch scan,
            which shares :func:`leaky_update` with the compiled kernel).
        """
        return self._dispatch(x, T, layer, False, sequence, False, True)

    def _dispatch(self, x, T, layer, want_mem, sequence, record_all, want_stats):
        layer = self.names[-1] if layer is None else layer
        if layer not in self.names:
            raise ConfigError(f"unknown spiking layer {layer!r}; {choices_hint(layer, self.names)}")
        last = len(self.stages) - 1 if record_all else self.names.index(layer)
        # the compiled kernel variants a call needs follow from T, the layers run, the membrane sum,
        # the input kind and the time chunk (which depends on the batch size): one key per such plan
        B = x.shape[1] if sequence else x.shape[0]
        tc = min(self._chunk(self._largest(x, last, sequence), B, int(T)), self.unroll)
        key_plan = (int(T), tc, last, layer, bool(want_mem), bool(sequence), bool(record_all),
                    tuple(x.shape[2:] if sequence else x.shape[1:]), x.dtype, x.device)
        if self.backend == "auto":
            self._poll_compile()
        backend = self._backend(key_plan)
        try:
            out = self._run(x, int(T), last, layer, want_mem, sequence, record_all, backend, want_stats)
        except Exception as e:  # a compile failure after all (e.g. a new shape) -> pure torch
            if backend != "compile" or self.backend != "auto" or isinstance(e, ConfigError):
                raise
            log.warning("torch.compile neuron kernel unavailable (%s: %s); using the pure-torch fallback",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self._compile_state[key_plan] = "failed"
            backend = "torch"
            out = self._run(x, int(T), last, layer, want_mem, sequence, record_all, "torch", want_stats)
        self._last_kernel = backend
        if self.backend == "auto" and backend == "torch" and not record_all and key_plan not in self._compile_state:
            self._compile_in_background(key_plan, B, x, int(T), tc, last, layer, want_mem, sequence)
        return out

    def _largest(self, x: torch.Tensor, last: int, sequence: bool) -> int:
        """Largest per-sample element count of any intermediate (probed once per input shape)."""
        key = (tuple(x.shape[2:] if sequence else x.shape[1:]), last)
        if key not in self._sizes:
            with torch.no_grad():
                h = self._apply(self.pre, (x[0] if sequence else x)[:1])
                big = h.numel()
                for st in self.stages[:last]:
                    h = self._apply(st.post, torch.zeros_like(h))
                    big = max(big, h.numel())
            self._sizes[key] = big
        return self._sizes[key]

    def _run(self, x, T, last, layer, want_mem, sequence, record_all, backend, want_stats=False):
        B = x.shape[1] if sequence else x.shape[0]
        if sequence and x.shape[0] != T:
            raise ConfigError(f"input sequence has {x.shape[0]} steps, expected T={T}")
        cur0 = None if sequence else self._apply(self.pre, x)   # once: the same at every step
        Tc = self._chunk(self._largest(x, last, sequence), B, T)
        if backend == "compile" and Tc >= self.unroll:
            Tc = self.unroll          # one fused kernel call per layer and chunk: no concatenation
        mems: list[torch.Tensor | None] = [None] * (last + 1)
        count = msum = None
        stats: ScanStats | None = None
        recorded: dict[str, list[torch.Tensor]] = {s.name: [] for s in self.stages[:last + 1]}
        for t0 in range(0, T, Tc):
            steps = min(Tc, T - t0)
            if sequence:
                cur, const = self._post(self.pre, x[t0:t0 + steps]), False
            else:
                cur, const = cur0, True
            for i in range(last + 1):
                st = self.stages[i]
                if mems[i] is None:   # states start at zero for every stimulus
                    mems[i] = torch.zeros((cur if const else cur[0]).numel(), dtype=cur.dtype, device=cur.device)
                is_target = st.name == layer and not record_all
                if is_target and want_mem and msum is None:
                    msum = torch.zeros_like(mems[i])
                if is_target and want_stats and stats is None:
                    stats = ScanStats.zeros(mems[i].numel(), T, mems[i].dtype, mems[i].device)
                mems[i], spk, ms = self._scan(st, cur, mems[i], msum if is_target and want_mem else None,
                                              steps, const, backend, stats if is_target else None, t0)
                if is_target and want_mem:
                    msum = ms
                if record_all:
                    recorded[st.name].append(spk)
                if i == last:
                    if not record_all:
                        c = spk.sum(0)
                        count = c if count is None else count + c
                    break
                cur, const = self._post(st.post, spk), False
        if record_all:
            return {n: torch.cat(v) for n, v in recorded.items()}
        if want_stats:
            return count, stats.reshape(*count.shape)
        return count, (msum.reshape(count.shape) if want_mem else None)
