"""Image parametrisations as generators: low-resolution pixels and lucent-style Fourier.

* :class:`PixelGenerator` -- a ``channels x latent_size x latent_size`` image on
  a uniform grid of ``n`` grey levels in ``[low, high]``, upsampled to
  ``size x size``: gradient-free search directly in (coarse) pixel space.
* :class:`FourierGenerator` -- the image's 2-D real spectrum scaled by
  ``1 / f**decay`` (natural-image statistics), optional decorrelated colour (the
  ImageNet colour-correlation square root used by lucent), then a sigmoid into
  ``[0, 1]``: the usual parametrisation for gradient activation maximization.

Both are differentiable in any real-valued latent (grid levels are only where a
gradient-free search puts them), and both output ``[k, channels, size, size]``
in ``[0, 1]`` (``value_range = (low, high)`` for pixels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mango.errors import ConfigError
from mango.spaces import GridSpace

from .common import GeneratorBase

__all__ = ["PixelGenerator", "FourierGenerator", "COLOR_CORRELATION_SVD_SQRT"]

_MODES = ("bilinear", "bicubic", "nearest")

#: Square root of ImageNet's colour correlation (as in lucid / lucent).
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


class PixelGenerator(GeneratorBase):
    """Low-resolution pixels upsampled to the output size.

    Args:
        channels: image channels (1 grey, 3 RGB).
        latent_size: side of the searched image (``d = channels * latent_size**2``).
        size: output side.
        levels: grey levels per pixel (the space's ``n``).
        low, high: the levels are evenly spaced on ``[low, high]``; also the output range.
        mode: upsampling, ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.

    ``gen(z float [k, channels, latent_size, latent_size]) -> [k, channels, size, size]``,
    clipped to ``[low, high]``.
    """

    name = "pixel"

    def __init__(self, channels: int = 1, latent_size: int = 8, size: int = 16, levels: int = 16,
                 low: float = 0.0, high: float = 1.0, mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in _MODES:
            raise ConfigError(f"unknown pixel upsampling mode {mode!r}; valid choices: {', '.join(_MODES)}")
        if int(latent_size) < 1 or int(size) < int(latent_size):
            raise ConfigError(f"pixel generator needs 1 <= latent_size <= size, got latent_size={latent_size}, size={size}")
        if int(channels) not in (1, 3):
            raise ConfigError(f"pixel generator channels must be 1 or 3, got {channels!r}")
        self.channels, self.latent_size, self.size = int(channels), int(latent_size), int(size)
        self.mode = mode
        self.space = GridSpace(d=self.channels * self.latent_size ** 2, n=int(levels), levels="uniform",
                               low=float(low), high=float(high),
                               shape=(self.channels, self.latent_size, self.latent_size))
        self.value_range = (float(low), float(high))
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # carries the device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[k, C, s, s]`` (or ``[k, d]``) pixel values -> images ``[k, C, size, size]`` in ``value_range``."""
        z = z.to(self._anchor.device, torch.float32).reshape(z.shape[0], *self.space.shape)
        if self.size != self.latent_size:
            kw = {} if self.mode == "nearest" else {"align_corners": False}
            z = F.interpolate(z, size=(self.size, self.size), mode=self.mode, **kw)
        return z.clamp(*self.value_range)

    def describe(self) -> str:
        return (f"pixel: {self.channels}x{self.latent_size}x{self.latent_size} on {self.space.n} levels, "
                f"{self.mode} to {self.size}x{self.size}")


class FourierGenerator(GeneratorBase):
    """Lucent-style Fourier parametrisation with decorrelated colour and a sigmoid.

    Args:
        channels: 1 or 3.
        size: image side ``H = W``.
        levels: grid levels per spectral coefficient (N(0, 1) quantiles).
        decay: spectrum scaling ``1 / max(f, 1/size)**decay`` (lucent: 1).
        contrast: the pixel standard deviation before the sigmoid for ``z ~ N(0, 1)``.
        decorrelate: map 3 channels through lucent's colour-correlation square root.

    Latent: real and imaginary parts of the ``rfft2`` half-spectrum, shape
    ``[channels, size, size // 2 + 1, 2]`` (``d`` = the product). The imaginary
    parts of the purely real bins (DC, Nyquist) have no effect.
    ``gen(z) -> [k, channels, size, size]`` in ``(0, 1)``.
    """

    name = "fourier"
    value_range = (0.0, 1.0)

    def __init__(self, channels: int = 1, size: int = 16, levels: int = 16, decay: float = 1.0,
                 contrast: float = 1.5, decorrelate: bool = True) -> None:
        super().__init__()
        if int(channels) not in (1, 3):
            raise ConfigError(f"fourier generator channels must be 1 or 3, got {channels!r}")
        if int(size) < 2:
            raise ConfigError(f"fourier generator size must be >= 2, got {size!r}")
        self.channels, self.size = int(channels), int(size)
        h = w = self.size
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** float(decay)
        # pixel std for z ~ N(0, 1) under norm="ortho": sum over the full spectrum of |scale|^2 * E|c|^2 / (h w)
        full = torch.cat([scale, scale[:, 1:(w - 1) // 2 + 1]], dim=1)  # the mirrored bins count twice
        std = torch.sqrt((full ** 2).sum() * 2.0 / (h * w))
        self.register_buffer("scale", (scale / std * float(contrast)).float())
        ccm = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
        ccm = ccm / ccm.norm(dim=0).max()
        self.register_buffer("color", ccm)
        self.decorrelate = bool(decorrelate) and self.channels == 3
        self.space = GridSpace(d=self.channels * h * (w // 2 + 1) * 2, n=int(levels),
                               shape=(self.channels, h, w // 2 + 1, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Spectra ``[k, C, H, W//2+1, 2]`` (any reals) -> images ``[k, C, H, W]`` in ``(0, 1)``."""
        z = z.to(self.scale.device, torch.float32).reshape(z.shape[0], *self.space.shape)
        spec = torch.complex(z[..., 0], z[..., 1]) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho")
        if self.decorrelate:
            img = torch.einsum("kchw,dc->kdhw", img, self.color)
        return torch.sigmoid(img)

    def describe(self) -> str:
        return f"fourier: {self.channels}x{self.size}x{self.size}, {self.space.d} spectral coefficients"
