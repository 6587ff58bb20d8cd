"""Registry factories: the generator names the CLI and configs use.

Registered in ``pyproject.toml`` under ``[project.entry-points."mango.generators"]``;
each factory's keyword arguments are the config parameters::

    vqvae-digits   embedded VQ-VAE on digits: 4 x 4 codes, codebook 32 -> [k, 1, 16, 16] in [0, 1]
    vqvae-cifar10  the paper's CIFAR-10 VQ-VAE (weights= path): 8 x 8 codes, codebook 512
                   -> [k, 3, 32, 32] CIFAR-normalised
    sngan-digits   embedded SN-GAN on digits: 32-d N(0, 1) grid -> [k, 1, 16, 16] in [0, 1]
    pixel          8 x 8 pixels on 16 levels upsampled to 16 x 16, in [0, 1]
    fourier        lucent-style Fourier parametrisation, 1 x 16 x 16 in (0, 1)

Your own generator: ``mango.registry.register("generator", "my-gen", factory)``
where ``factory(**params)`` returns e.g. ``mango.generators.wrap(module, space)``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mango.data import paper_weights_file

from .common import weights_dir
from .params import FourierGenerator, PixelGenerator
from .sngan import load_sngan
from .vqvae import load_paper_vqvae, load_vqvae

__all__ = ["vqvae_digits", "vqvae_cifar10", "sngan_digits", "pixel", "fourier"]


def vqvae_digits(device: str = "cpu", weights: str | None = None):
    """VQ-VAE trained on scikit-learn digits (embedded): codebook space 16 x 32 -> [k, 1, 16, 16] in [0, 1]."""
    path = Path(weights) if weights else weights_dir() / "vqvae_digits.pt"
    return load_vqvae(path, device=torch.device(device), name="vqvae-digits")


def vqvae_cifar10(device: str = "cpu", weights: str | None = None):
    """The paper's CIFAR-10 VQ-VAE: codebook space 64 x 512 -> [k, 3, 32, 32], CIFAR-normalised.

    ``weights``: ``vqvae_cifar10.pt`` or the folder holding it (default: see
    :func:`mango.data.paper_weights_dir`, e.g. ``$MANGO_PAPER_WEIGHTS``).
    """
    return load_paper_vqvae(paper_weights_file("vqvae_cifar10.pt", weights), device=torch.device(device))


def sngan_digits(device: str = "cpu", weights: str | None = None, levels: int = 16, grid: str = "normal"):
    """SN-GAN trained on digits (embedded): 32-d grid (N(0,1) quantiles) -> [k, 1, 16, 16] in [0, 1]."""
    path = Path(weights) if weights else weights_dir() / "sngan_digits.pt"
    return load_sngan(path, device=torch.device(device), levels=levels, grid=grid, name="sngan-digits")


def pixel(device: str = "cpu", channels: int = 1, latent_size: int = 8, size: int = 16, levels: int = 16,
          low: float = 0.0, high: float = 1.0, mode: str = "bilinear"):
    """Low-resolution pixels on a uniform grid, upsampled: default 8 x 8 x 16 levels -> [k, 1, 16, 16] in [0, 1]."""
    return PixelGenerator(channels=channels, latent_size=latent_size, size=size, levels=levels,
                          low=low, high=high, mode=mode).to(torch.device(device)).eval()


def fourier(device: str = "cpu", channels: int = 1, size: int = 16, levels: int = 16, decay: float = 1.0,
            contrast: float = 1.5, decorrelate: bool = True):
    """Lucent-style Fourier / decorrelated-colour parametrisation: -> [k, channels, size, size] in (0, 1)."""
    return FourierGenerator(channels=channels, size=size, levels=levels, decay=decay, contrast=contrast,
                            decorrelate=decorrelate).to(torch.device(device)).eval()
