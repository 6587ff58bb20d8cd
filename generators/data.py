"""Offline training data shared by the default generators and targets.

Everything here is available without a network: scikit-learn's bundled digits
(1,797 images of 8 x 8 pixels, values 0..16), scikit-image's bundled photos, and
CIFAR-10 only when the user already has it on disk.

The default ("digits") image format of MANGO's embedded models is
``float32 [N, 1, 16, 16]`` in ``[0, 1]``: the 8 x 8 digits scaled by 1/16 and
upsampled bilinearly to 16 x 16. Generators trained on it output that range and
targets trained on it take it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DIGITS_SIZE", "digits", "photo_crops"]

DIGITS_SIZE = 16


def digits(split: str = "train", size: int = DIGITS_SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits as ``(images [N, 1, size, size] in [0, 1], labels [N] int64)``.

    Args:
        split: ``"train"`` (80 %), ``"test"`` (20 %, held out) or ``"all"``; the split
            is stratified and fixed by ``seed``.
        size: output side length (bilinear upsampling from 8).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; valid choices: train, test, all")
    data = load_digits()
    x = data.images.astype(np.float32) / 16.0
    y = data.target.astype(np.int64)
    if split != "all":
        idx = np.arange(len(y))
        tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y)
        sel = tr if split == "train" else te
        x, y = x[sel], y[sel]
    xt = torch.from_numpy(x)[:, None]
    if size != 8:
        xt = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return xt.contiguous(), torch.from_numpy(y)


def photo_crops(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` random RGB crops ``[n, 3, size, size]`` in ``[0, 1]`` from scikit-image's bundled photos."""
    from skimage import data as skdata

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
    photos = []
    for name in names:
        try:
            img = getattr(skdata, name)()
        except Exception:  # a photo missing from this scikit-image build
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            photos.append(np.asarray(img, dtype=np.float32) / 255.0)
    if not photos:
        raise RuntimeError("scikit-image ships none of the expected RGB photos")
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        p = photos[rng.integers(len(photos))]
        scale = rng.uniform(1.0, 4.0)
        side = int(min(p.shape[0], p.shape[1], max(size, size * scale)))
        r = rng.integers(0, p.shape[0] - side + 1)
        c = rng.integers(0, p.shape[1] - side + 1)
        crop = torch.from_numpy(p[r:r + side, c:c + side]).permute(2, 0, 1)[None]
        out[i] = F.interpolate(crop, size=(size, size), mode="area")[0].numpy()
    return torch.from_numpy(out)
