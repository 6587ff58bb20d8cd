"""Data shared by the generators, the targets and their training recipes (the engine's, so both may use it).

Everything here is available without a network: scikit-learn's bundled digits
(1,797 images of 8 x 8 pixels, values 0..16), scikit-image's bundled photos,
CIFAR-10 only when the user already has it on disk, the CIFAR-10 normalisation
constants, and where the paper's CIFAR-10 checkpoints are found
(:func:`paper_weights_dir`). No model is imported here.

The default ("digits") image format of MANGO's embedded models is
``float32 [N, 1, 16, 16]`` in ``[0, 1]``: the 8 x 8 digits scaled by 1/16 and
upsampled bilinearly to 16 x 16. Generators trained on it output that range and
targets trained on it take it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DIGITS_SIZE", "digits", "photo_crops", "cifar10", "CIFAR10_MEAN", "CIFAR10_STD",
           "PAPER_WEIGHTS_ENV", "paper_weights_dir", "paper_weights_file"]

DIGITS_SIZE = 16

#: Per-channel CIFAR-10 normalisation ``(x - mean) / std`` of images in [0, 1], used by the paper's checkpoints.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2471, 0.2435, 0.2616)

#: environment variable naming the folder with the paper's checkpoints
PAPER_WEIGHTS_ENV = "MANGO_PAPER_WEIGHTS"


def paper_weights_dir() -> Path:
    """The folder holding the paper's CIFAR-10 checkpoints (``vqvae_cifar10.pt``, ``snn_cifar10.pt``).

    Precedence (the first that applies wins):

    1. ``$MANGO_PAPER_WEIGHTS`` -- the folder (a path to a file is read as the folder holding it);
    2. ``../shared/weights/cifar10`` relative to the current directory, if it is a folder;
    3. ``shared/weights/cifar10`` beside the project checkout this package was loaded from, if a folder;
    4. otherwise (2), so that the error a caller raises names the expected place.

    The folder is not checked for the files; see :func:`paper_weights_file`.
    """
    env = os.environ.get(PAPER_WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        return p.parent if p.suffix == ".pt" else p
    rel = Path("..") / "shared" / "weights" / "cifar10"
    if rel.is_dir():
        return rel
    beside = Path(__file__).resolve().parents[2] / "shared" / "weights" / "cifar10"
    return beside if beside.is_dir() else rel


def paper_weights_file(filename: str, path: str | os.PathLike | None = None) -> Path:
    """The checkpoint ``filename`` from ``path`` (a file, or a folder holding it), default
    :func:`paper_weights_dir`. The file is not checked; loading it names a missing one."""
    p = Path(path).expanduser() if path is not None else paper_weights_dir()
    return p if p.suffix == ".pt" and not p.is_dir() else p / filename


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


_CIFAR_SPLITS = ("train", "test", "all")


def cifar10(root: str | Path, split: str = "train", limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from disk as ``(images float32 [N, 3, 32, 32] in [0, 1], labels int64 [N])``.

    Nothing is downloaded. ``root`` may be

    * the python-pickle folder ``cifar-10-batches-py`` (``data_batch_1..5``,
      ``test_batch``), or a folder that contains it;
    * a torchvision/ImageFolder-style tree: ``root/<class>/*.png``, or
      ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (classes sorted
      by name give the labels).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (ImageFolder trees without
            ``train``/``test`` subfolders are returned whole).
        limit: keep at most this many images (the first ones).

    Raises:
        FileNotFoundError: ``root`` holds neither layout (the message says what was looked for).
    """
    if split not in _CIFAR_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(_CIFAR_SPLITS)}")
    root = Path(root).expanduser()
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file() or (cand / "test_batch").is_file():
            return _cifar_pickles(cand, split, limit)
    if root.is_dir():
        sub = [root / s for s in (("train", "test") if split == "all" else (split,))]
        if all(p.is_dir() for p in sub):
            parts = [_image_folder(p, limit) for p in sub]
            x = torch.cat([p[0] for p in parts])
            y = torch.cat([p[1] for p in parts])
            return (x[:limit], y[:limit]) if limit else (x, y)
        if any(p.is_dir() and any(p.glob("*.png")) for p in root.iterdir()):
            return _image_folder(root, limit)
    raise FileNotFoundError(
        f"no CIFAR-10 found at {str(root)!r}: expected 'cifar-10-batches-py' pickle batches "
        "(data_batch_1..5, test_batch) or an ImageFolder tree of PNGs (<class>/*.png, optionally under train/ and test/)"
    )


def _cifar_pickles(folder: Path, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    files = names["train"] + names["test"] if split == "all" else names[split]
    xs, ys, total = [], [], 0
    for name in files:
        f = folder / name
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # the official CIFAR-10 python format
        data = batch[b"data"] if b"data" in batch else batch["data"]
        labels = batch[b"labels"] if b"labels" in batch else batch["labels"]
        xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
        total += len(ys[-1])
        if limit and total >= limit:
            break
    if not xs:
        raise FileNotFoundError(f"no CIFAR-10 batches for split {split!r} in {str(folder)!r}")
    x = torch.from_numpy(np.concatenate(xs)[:limit]).float().div_(255.0)
    y = torch.from_numpy(np.concatenate(ys)[:limit])
    return x, y


def _image_folder(folder: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    import imageio.v3 as iio

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((folder / cls).iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
                continue
            img = np.asarray(iio.imread(f))
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            xs.append(img[:, :, :3].transpose(2, 0, 1))
            ys.append(label)
            if limit and len(xs) >= limit:
                break
        if limit and len(xs) >= limit:
            break
    if not xs:
        raise FileNotFoundError(f"no images in ImageFolder tree {str(folder)!r}")
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0)
    return x, torch.tensor(ys, dtype=torch.int64)
