"""Benchmark: exact fast SNN path vs the snnTorch step loop on the paper's CIFAR-10 SNN.

    python experiments/bench_snn.py [--weights DIR] [--threads 2] [--repeats 3]
                                    [--T 32 128] [--batch 16 64] [--quick]

For every (T, batch) it runs, side by side in each repeat, the snnTorch step
loop (reference), the fast path with the ``torch.compile`` neuron kernel and
with the pure-torch kernel, checks that their read-out spike counts are
identical, and reports images/s (median over repeats) and the speed-up.

It also measures the machine's convolution / matrix-product throughput on the
network's own layers (large batches), once at the start (printed) and again
beside every repeat, and prints the FLOP bound (median over the repeats):
images/s if the fast path spent its time only on its convolution/linear
arithmetic (conv0 once, conv1 + linear1 + linear2 at every step) at the
measured rates. "bound / fast" is how far the fast path is from it (1.0 = at
the bound).

On a CUDA device (``torch.cuda.is_available()``) it also reports the fast path's
images/s for T=32 and T=128 at a batch that fills the GPU (``--gpu-batch``).
Random normalised images are used (only speed is measured here; exactness is
tested in tests/test_snn_fast.py).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mango.data import paper_weights_dir  # noqa: E402
from mango.targets.paper_snn import load_paper_snn  # noqa: E402
from mango.targets.snn_fast import FastSNN  # noqa: E402
from mango.targets.spiking import reference_run  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def layer_flops(net) -> dict[str, float]:
    """FLOPs per image of each conv/linear layer (2 * MACs)."""
    return {
        "conv0": 2 * 28 * 28 * 200 * 3 * 25,
        "conv1": 2 * 10 * 10 * 64 * 200 * 25,
        "linear1": 2 * 1600 * 100,
        "linear2": 2 * 100 * 10,
    }


def measure_throughput(net, device: torch.device, reps: int = 3) -> dict[str, float]:
    """GFLOP/s of the network's conv/linear layers at large batches, and of a 2048^2 matmul."""
    out = {}
    fl = layer_flops(net)
    shapes = {"conv0": (64, 3, 32, 32), "conv1": (512, 200, 14, 14), "linear1": (4096, 1600),
              "linear2": (4096, 100)}
    with torch.no_grad():
        for name, shp in shapes.items():
            x = (torch.rand(shp, device=device) < 0.2).float()
            layer = getattr(net, name)
            layer(x)
            ts = [timed(lambda: layer(x), device)[0] for _ in range(reps)]
            out[name] = fl[name] * shp[0] / min(ts) / 1e9
        a = torch.randn(2048, 2048, device=device)
        a @ a
        ts = [timed(lambda: a @ a, device)[0] for _ in range(reps)]
        out["matmul2048"] = 2 * 2048 ** 3 / min(ts) / 1e9
    return out


def flop_bound(T: int, rates: dict[str, float]) -> float:
    """Images/s if only the fast path's conv/linear arithmetic took time, at the measured rates."""
    fl = layer_flops(None)
    sec = fl["conv0"] / (rates["conv0"] * 1e9)
    for name in ("conv1", "linear1", "linear2"):
        sec += T * fl[name] / (rates[name] * 1e9)
    return 1.0 / sec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help=f"folder or file (default {paper_weights_dir()})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--T", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--gpu-batch", type=int, default=1024)
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) step loop")
    ap.add_argument("--quick", action="store_true", help="T=32, batch 16, 2 repeats")
    a = ap.parse_args(argv)
    if a.quick:
        a.T, a.batch, a.repeats = [32], [16], 2
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_paper_snn(a.weights, device)
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{a.threads} threads'}),"
          f" torch {torch.__version__}")

    rates = measure_throughput(net, device)
    print("measured throughput (GFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))

    fast_c = FastSNN(net, backend="auto")
    fast_t = FastSNN(net, backend="torch")
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        t_compile, _ = timed(lambda: fast_c.run(torch.randn(2, 3, 32, 32, generator=gen).to(device), 16), device)
        print(f"warm-up (torch.compile of the neuron kernel; cached on disk after the first run): "
              f"{t_compile:.1f} s; backend in use: {fast_c.backend if fast_c.backend != 'auto' else 'compile'}")
        for T in a.T:
            for B in a.batch:
                x = (torch.randn(B, 3, 32, 32, generator=gen) * 1.5).to(device)
                res: dict[str, list[float]] = {"ref": [], "fast": [], "fast-torch": [], "bound": []}
                same = True
                for _ in range(a.repeats):
                    # the machine's conv/matmul rate, measured beside each repeat (shared cores vary)
                    res["bound"].append(flop_bound(T, measure_throughput(net, device, reps=2)))
                    if not a.no_reference:
                        dt, r = timed(lambda: reference_run(net, x, T, ["final_spiking"])["final_spiking"][0],
                                      device)
                        res["ref"].append(B / dt)
                    dt, f = timed(lambda: fast_c.run(x, T)[0], device)
                    res["fast"].append(B / dt)
                    dt, f2 = timed(lambda: fast_t.run(x, T)[0], device)
                    res["fast-torch"].append(B / dt)
                    same &= torch.equal(f, f2) and (a.no_reference or torch.equal(f, r))
                med = {k: statistics.median(v) if v else float("nan") for k, v in res.items()}
                bound = med["bound"]
                rows.append((T, B, med["ref"], med["fast"], med["fast-torch"], med["fast"] / med["ref"],
                             bound, bound / med["fast"], same))
                print(f"  T={T} B={B}: done ({a.repeats} repeats)", flush=True)

    print()
    print("| T | batch | step loop img/s | fast (compile) img/s | fast (torch) img/s | speed-up | "
          "FLOP bound img/s | bound / fast | identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    for T, B, r, f, ft, ratio, bound, gap, same in rows:
        print(f"| {T} | {B} | {r:.2f} | {f:.2f} | {ft:.2f} | {ratio:.1f}x | {bound:.1f} | {gap:.2f}x | {same} |")

    if device.type == "cuda":
        print()
        print(f"GPU, fast path, batch {a.gpu_batch}:")
        x = torch.randn(a.gpu_batch, 3, 32, 32, device=device)
        with torch.no_grad():
            for T in (32, 128):
                fast_c.run(x, T)
                ts = [timed(lambda: fast_c.run(x, T), device)[0] for _ in range(a.repeats)]
                print(f"  T={T}: {a.gpu_batch / statistics.median(ts):.1f} images/s "
                      f"(FLOP bound at measured rates {flop_bound(T, rates):.1f})")


if __name__ == "__main__":
    main()
