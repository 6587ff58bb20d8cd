"""Recipe: train the embedded digits SNN (``snn-digits``) with surrogate gradients.

    python -m mango.targets.train_snn [--epochs 30] [--T 16] [--seed 0] [--threads 1] [--out DIR]

Data: :func:`mango.data.digits` (``[N, 1, 16, 16]`` in [0, 1], fixed
train/test split), presented as a static image at each of ``T`` steps. snnTorch
``Leaky`` neurons with the arctan surrogate gradient (snnTorch's default),
backpropagation through time over the step loop, loss = cross-entropy of the
read-out spike counts. Test accuracy is measured with the exact fast path.
Writes ``snn_digits.pt`` and ``snn_digits.json`` to ``--out``.
"""
from __future__ import annotations

import torch

from mango.data import digits
from mango.recipes import start_recipe

from .digits import SNN_FILE, SNN_T, WEIGHTS_DIR, build_digits_snn
from .snn_fast import FastSNN
from .spiking import reset_states
from .training import fit, recipe_parser, save_recipe


def counts(net: torch.nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """Read-out spike counts ``[B, 10]`` from the snnTorch step loop (differentiable)."""
    reset_states(net)
    total = 0
    for _ in range(T):
        total = total + net(x)
    reset_states(net)
    return total


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> float:
    net.eval()
    with torch.no_grad():
        c, _ = FastSNN(net, backend="torch").run(x, T)
        # ties broken by the lowest index, as argmax does
        return float((c.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    ap = recipe_parser(__doc__.splitlines()[0], epochs=30, out=WEIGHTS_DIR)
    ap.add_argument("--T", type=int, default=SNN_T)
    a = ap.parse_args(argv)
    gen = start_recipe(a.seed, a.threads)
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    net = build_digits_snn()
    wall = fit(net, lambda x: counts(net, x, a.T), xtr, ytr, a, gen, desc="snn-digits")
    meta = {"model": "snn-digits", "T": a.T, "test_accuracy": accuracy(net, xte, yte, a.T),
            "train_accuracy": accuracy(net, xtr, ytr, a.T), "epochs": a.epochs, "wall_seconds": round(wall, 1)}
    reset_states(net)
    return save_recipe(net.state_dict(), meta, a, SNN_FILE, "mango.targets.train_snn", argv)

if __name__ == "__main__":
    main()
