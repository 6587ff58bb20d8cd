"""MANGO's concrete image generators (installed as ``mango.generators``).

Every generator is a torch ``nn.Module`` in eval mode meeting :mod:`mango.protocols`:
``space`` (a :class:`~mango.spaces.LatentSpace`), ``gen(space.decode(I)) -> images
[k, C, H, W]``, ``value_range``, ``to_uint8(images) -> uint8 [k, H, W, C]`` and
``differentiable``.

============== ======================================= ================================
name           space                                   images
============== ======================================= ================================
vqvae-digits   codebook, 4 x 4 positions x 32 codes    [k, 1, 16, 16] in [0, 1]
vqvae-cifar10  codebook, 8 x 8 positions x 512 codes   [k, 3, 32, 32] CIFAR-normalised
sngan-digits   grid, 32 x 16 N(0, 1) quantiles         [k, 1, 16, 16] in [0, 1]
pixel          grid, 1 x 8 x 8 x 16 levels on [0, 1]   [k, 1, 16, 16] in [0, 1]
fourier        grid, 1 x 16 x 9 x 2 x 16 quantiles     [k, 1, 16, 16] in (0, 1)
============== ======================================= ================================

Modules: :mod:`.vqvae`, :mod:`.sngan`, :mod:`.params` (pixel / Fourier),
:mod:`.common` (``to_uint8``, ``wrap``, safe weight loading), :mod:`.factories`
(the registry entries), and the training
recipes ``python -m mango.generators.train_vqvae`` / ``train_sngan`` (training data:
:mod:`mango.data`).

Your own generator: ``wrap(module, space, value_range=(0, 1), name="mine")``, and
``mango.registry.register("generator", "mine", factory)`` to name it in configs.

Importing this package loads no model (submodules are imported on first use).
"""
from __future__ import annotations

from mango.lazy import lazy_attributes

_LAZY = {
    "wrap": ".common", "to_uint8": ".common", "WrappedGenerator": ".common", "GeneratorBase": ".common",
    "CIFAR10_MEAN": ".common", "CIFAR10_STD": ".common", "load_weights": ".common",
    "VQVAE": ".vqvae", "load_vqvae": ".vqvae", "load_paper_vqvae": ".vqvae",
    "SNGANGenerator": ".sngan", "SNDiscriminator": ".sngan", "load_sngan": ".sngan",
    "PixelGenerator": ".params", "FourierGenerator": ".params",
    "vqvae_digits": ".factories", "vqvae_cifar10": ".factories", "sngan_digits": ".factories",
    "pixel": ".factories", "fourier": ".factories",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
