"""Set-up shared by the training recipes of the embedded models (generators and targets alike).

``python -m mango.generators.train_vqvae`` / ``train_sngan`` and
``python -m mango.targets.train_cnn`` / ``train_snn`` take the same ``--seed`` and
``--threads`` flags and start the same way (:func:`start_recipe`); the generator
recipes also share the data flags (:func:`data_arguments`, data from :mod:`mango.data`).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

__all__ = ["seed_arguments", "data_arguments", "start_recipe"]


def seed_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--seed`` (default 0) and ``--threads`` (torch CPU threads, default 1); returns ``ap``."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def data_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training-data flags of the generator recipes: ``--data`` (digits, photos, cifar10),
    ``--cifar-root``, ``--limit``, ``--n-photos``; returns ``ap``."""
    ap.add_argument("--data", default="digits", choices=["digits", "photos", "cifar10"])
    ap.add_argument("--cifar-root", default=None, help="CIFAR-10 folder (pickle batches or ImageFolder PNGs)")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many CIFAR-10 training images")
    ap.add_argument("--n-photos", type=int, default=8192, help="number of photo crops for --data photos")
    return ap


def start_recipe(seed: int, threads: int) -> torch.Generator:
    """Set torch's CPU threads and seed torch and numpy (before a model is built, so its initialisation
    is seeded too); returns a separate ``torch.Generator`` seeded with ``seed`` for batches and augmentation."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)
