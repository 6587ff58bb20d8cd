"""Recipe: train the embedded digits CNN (``cnn-digits``).

    python -m mango.targets.train_cnn [--epochs 20] [--seed 0] [--threads 1] [--out DIR]

Data: :func:`mango.data.digits` (``[N, 1, 16, 16]`` in [0, 1], fixed
train/test split). Adam, cross-entropy, light augmentation (random shifts of up
to 1 pixel). Writes ``cnn_digits.pt`` (state dict) and ``cnn_digits.json``
(accuracy, command, seed, wall time) to ``--out`` (default ``targets/weights``).
"""
from __future__ import annotations

import torch

from mango.data import digits
from mango.recipes import start_recipe

from .digits import CNN_FILE, WEIGHTS_DIR, build_digits_cnn
from .training import fit, recipe_parser, save_recipe


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    a = recipe_parser(__doc__.splitlines()[0], epochs=20, out=WEIGHTS_DIR).parse_args(argv)
    gen = start_recipe(a.seed, a.threads)
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    model = build_digits_cnn()
    wall = fit(model, model, xtr, ytr, a, gen, desc="cnn-digits")
    meta = {"model": "cnn-digits", "test_accuracy": accuracy(model, xte, yte),
            "train_accuracy": accuracy(model, xtr, ytr), "epochs": a.epochs, "wall_seconds": round(wall, 1)}
    return save_recipe(model.state_dict(), meta, a, CNN_FILE, "mango.targets.train_cnn", argv)

if __name__ == "__main__":
    main()
