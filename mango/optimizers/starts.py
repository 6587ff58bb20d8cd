"""Start codes from natural images through a generator's encoder (VQ-VAE ``encode``).

A search over a codebook space that starts from codes of real images starts from images the
generator renders well and a visual network responds to, instead of from uniform noise codes.

* 3-channel generators (CIFAR-sized): scikit-image's bundled photographs (astronaut, coffee,
  chelsea, rocket), each as a centre crop and four corner crops (and their mirror images),
  downscaled to the generator's image size.
* 1-channel generators: scikit-learn's digits as :func:`mango.data.digits` loads them (the
  embedded generators' training images), a fixed, class-balanced pick.

Images are mapped into the generator's output space (``[0, 1]``, or normalised with the
generator's ``mean``/``std``) before ``encode``. A generator without ``encode`` gives no starts.
The libraries are imported only when starts are asked for.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..data import digits

__all__ = ["natural_images", "natural_start_codes", "encode_images", "PHOTOS"]

log = logging.getLogger(__name__)

#: scikit-image colour photographs used for colour starts (bundled with the package, no download)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _crops(img: np.ndarray) -> list[np.ndarray]:
    """Centre square crop and the four corner squares of half the short side, each also mirrored."""
    h, w = img.shape[:2]
    s = min(h, w)
    out = [img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]]
    q = s // 2
    out += [img[:q, :q], img[:q, w - q:], img[h - q:, :q], img[h - q:, w - q:]]
    return out + [c[:, ::-1] for c in out]


def natural_images(channels: int, size: int) -> np.ndarray:
    """Natural images ``float32 [m, channels, size, size]`` in ``[0, 1]``.

    ``channels == 3``: crops of scikit-image's colour photographs (m = 40);
    ``channels == 1``: 50 scikit-learn digits (5 of each class, first in dataset order).
    """
    if channels == 1:
        images, labels = digits("all", size=size)
        y = labels.numpy()
        pick = np.concatenate([np.nonzero(y == c)[0][:5] for c in range(10)])
        return images[pick].numpy().astype(np.float32)
    if channels != 3:
        raise ValueError(f"natural images exist for 1 or 3 channels, got {channels}")
    from skimage import data as skdata
    from skimage.transform import resize

    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float32)
        img = img[..., :3] / (255.0 if img.max() > 1.0 else 1.0)
        for c in _crops(img):
            out.append(resize(c, (size, size), order=1, anti_aliasing=True).transpose(2, 0, 1))
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)


def encode_images(generator: Any, images: np.ndarray) -> np.ndarray:
    """Codes ``int64 [m, ...]`` of images ``float32 [m, C, H, W]`` in ``[0, 1]`` through ``generator.encode``,
    after mapping them into its output space (``(x - mean) / std`` when it has a per-channel ``mean``/``std``)."""
    import torch

    x = np.ascontiguousarray(images, dtype=np.float32)
    C = x.shape[1]
    mean, std = getattr(generator, "mean", None), getattr(generator, "std", None)
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else [0.0] * C, dtype=np.float32).reshape(1, C, 1, 1)
        s = np.asarray(std if std is not None else [1.0] * C, dtype=np.float32).reshape(1, C, 1, 1)
        x = (x - m) / s
    with torch.no_grad():
        return np.asarray(generator.encode(torch.from_numpy(x)), dtype=np.int64)


def natural_start_codes(generator: Any, max_codes: int | None = None) -> np.ndarray | None:
    """Codes ``int64 [m, d]`` of natural images through ``generator.encode`` (``None``: no encoder).

    Needs ``generator.encode(images [m, C, H, W]) -> int64 [m, d]`` and ``generator.image_shape``
    ``(C, H, W)``; ``generator.mean``/``std`` (per channel) when its images are normalised.
    Duplicated codes are dropped (first kept).
    """
    encode = getattr(generator, "encode", None)
    shape = getattr(generator, "image_shape", None)
    if encode is None or shape is None:
        log.info("generator %s has no encode/image_shape: no natural starts", type(generator).__name__)
        return None
    C, H, W = (int(s) for s in shape)
    if H != W or C not in (1, 3):
        log.info("no natural images for image shape %s", shape)
        return None
    codes = encode_images(generator, natural_images(C, H))
    _, first = np.unique(codes, axis=0, return_index=True)
    codes = codes[np.sort(first)]
    return codes if max_codes is None else codes[: int(max_codes)]
