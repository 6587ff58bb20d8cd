"""SN-GAN (Miyato et al. 2018): ResNet generator, spectral-norm ResNet discriminator.

Generator::

    z [k, z_dim] -> linear -> [k, ch, 4, 4] -> log2(image_size / 4) up-blocks
    (BN, ReLU, 2x nearest upsample, conv 3x3, BN, ReLU, conv 3x3; shortcut: upsample, conv 1x1)
    -> BN, ReLU, conv 3x3 -> tanh -> (t + 1) / 2, images in [0, 1]

The paper's CIFAR-10 setting is ``z_dim=128, ch=256, image_size=32``
(``SNGANGenerator()`` defaults to ``z_dim=128, ch=128``); the embedded digits
model is smaller (see ``weights/README.md``).

As a MANGO generator: ``space = GridSpace(d=z_dim, n=levels)`` with
equal-probability N(0, 1) quantiles by default; ``gen(z float [k, z_dim]) ->
images [k, C, H, W]`` in ``[0, 1]``. Any real ``z`` works (gradient AM).
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from mango.errors import ConfigError
from mango.spaces import GridSpace

from .common import GeneratorBase, load_state, load_weights

__all__ = ["SNGANGenerator", "SNDiscriminator", "load_sngan"]


class _GBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class SNGANGenerator(GeneratorBase):
    """ResNet generator of SN-GAN on a grid latent space.

    Args:
        z_dim: latent size (the space's ``d``); paper: 128.
        ch: channels of the residual blocks.
        image_size: output side, ``4 * 2**m`` (16 for digits, 32 for CIFAR-10).
        out_channels: image channels (1 for digits, 3 for CIFAR-10).
        levels: grid levels per latent variable (the space's ``n``).
        grid: ``"normal"`` (equal-probability N(0, 1) quantiles) or ``"uniform"``.
        low, high: interval of ``"uniform"`` levels.

    Output: ``[k, out_channels, image_size, image_size]`` in ``[0, 1]``.
    """

    name = "sngan"
    value_range = (0.0, 1.0)

    def __init__(self, z_dim: int = 128, ch: int = 128, image_size: int = 32, out_channels: int = 3,
                 levels: int = 16, grid: str = "normal", low: float = -2.0, high: float = 2.0) -> None:
        super().__init__()
        m = math.log2(int(image_size) / 4)
        if int(image_size) < 8 or m != int(m):
            raise ConfigError(f"SN-GAN image_size must be 4 * 2**m with m >= 1 (8, 16, 32, 64), got {image_size!r}")
        self.config: dict[str, Any] = dict(z_dim=int(z_dim), ch=int(ch), image_size=int(image_size),
                                           out_channels=int(out_channels))
        self.z_dim = int(z_dim)
        self.ch = int(ch)
        self.linear = nn.Linear(self.z_dim, 4 * 4 * self.ch)
        self.blocks = nn.Sequential(*[_GBlock(self.ch, self.ch) for _ in range(int(m))])
        self.bn = nn.BatchNorm2d(self.ch)
        self.conv = nn.Conv2d(self.ch, int(out_channels), 3, 1, 1)
        self.space = GridSpace(d=self.z_dim, n=int(levels), levels=grid, low=low, high=high)
        self.image_shape = (int(out_channels), int(image_size), int(image_size))
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``float [k, z_dim]`` (any real values) -> images ``[k, C, H, W]`` in ``[0, 1]``.

        Raises:
            TypeError: integer (or bool) input: grid indices such as a result's ``best_code`` are not latents
                (``gen(gen.space.decode(code))`` turns them into latents; a VQ-VAE takes its codes directly).
        """
        if not (torch.is_floating_point(z) or torch.is_complex(z)):
            raise TypeError(f"{self.name} takes float latents [k, {self.z_dim}], got {z.dtype} values: grid indices "
                            f"(e.g. a result's best_code) are not latents; decode them first with "
                            f"gen(gen.space.decode(code))")
        z = z.to(self.device, self.linear.weight.dtype).reshape(z.shape[0], self.z_dim)
        h = self.linear(z).view(z.shape[0], self.ch, 4, 4)
        h = self.blocks(h)
        return (torch.tanh(self.conv(F.relu(self.bn(h)))) + 1.0) / 2.0

    def describe(self) -> str:
        c = self.config
        return (f"{self.name}: SN-GAN generator z_dim={c['z_dim']} ch={c['ch']} -> "
                f"{c['out_channels']}x{c['image_size']}x{c['image_size']}, grid n={self.space.n}")


class _DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.sc = spectral_norm(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down = down
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = F.avg_pool2d(s, 2) if self.down else s
            s = self.sc(s) if self.sc is not None else s
        else:
            s = self.sc(s) if self.sc is not None else s
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class SNDiscriminator(nn.Module):
    """Spectral-norm ResNet discriminator (training only): images ``[k, C, H, W]`` -> logits ``[k]``."""

    def __init__(self, ch: int = 128, image_size: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        n_down = int(math.log2(int(image_size) / 4))
        blocks = [_DBlock(in_channels, ch, down=True, first=True)]
        blocks += [_DBlock(ch, ch, down=True, first=False) for _ in range(n_down - 1)]
        blocks += [_DBlock(ch, ch, down=False, first=False), _DBlock(ch, ch, down=False, first=False)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(nn.Linear(ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h).squeeze(1)


def load_sngan(path: str | os.PathLike, device: str | torch.device = "cpu", levels: int = 16,
               grid: str = "normal", name: str | None = None) -> SNGANGenerator:
    """Load a generator saved by :mod:`mango.generators.train_sngan` (``{"state_dict", "config"}``).

    Raises:
        ConfigError: the file is missing, unreadable or not an SN-GAN generator checkpoint.
    """
    obj = load_state(path)
    if "config" not in obj or "state_dict" not in obj or "model" not in obj["config"]:
        raise ConfigError(f"weights file {str(path)!r} is not a MANGO SN-GAN checkpoint (no 'config'/'state_dict' entries)")
    cfg = obj["config"]["model"]
    missing = [k for k in ("z_dim", "ch", "image_size", "out_channels") if not isinstance(cfg, dict) or k not in cfg]
    if missing:     # e.g. a VQ-VAE checkpoint, which has a config too
        raise ConfigError(f"weights file {str(path)!r} is not a MANGO SN-GAN checkpoint: its model config has no "
                          f"{', '.join(missing)} (is it another generator's weights?)")
    cfg = dict(cfg)
    if isinstance(levels, (bool, np.bool_)) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ConfigError(f"generator parameter levels (grid levels per latent variable) must be an integer >= 2, "
                          f"got {levels!r}")
    model = SNGANGenerator(z_dim=cfg["z_dim"], ch=cfg["ch"], image_size=cfg["image_size"],
                           out_channels=cfg["out_channels"], levels=levels, grid=grid)
    load_weights(model, path, key="state_dict")
    if name:
        model.name = name
    return model.to(device).eval()
