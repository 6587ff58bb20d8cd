"""Images of journaled codes, made in memory for the page (never written into the run folder).

A run's journal holds every query's code; with the run's generator (from ``run.json``) the page can
show the latest batch as a grid, and the best image before the run has written ``best.png``.
The generator is built once per config, on the CPU, lazily (the first request pays for it).
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

import numpy as np

__all__ = ["Renderer", "grid"]

log = logging.getLogger(__name__)

#: most images drawn in a batch grid
MAX_GRID = 64


def grid(images: np.ndarray, cols: int | None = None, pad: int = 1, min_cell: int = 48) -> np.ndarray:
    """``uint8 [k, H, W, C]`` -> one ``uint8 [rows*(H'+pad)-pad, cols*(W'+pad)-pad, C]`` image (white gaps),
    each image enlarged by an integer factor (nearest neighbour) to at least ``min_cell`` pixels."""
    x = np.asarray(images, dtype=np.uint8)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"grid needs uint8 [k, H, W, C] with k >= 1, got shape {x.shape}")
    k, h, w, c = x.shape
    s = max(1, -(-min_cell // max(h, w)))
    if s > 1:
        x = np.repeat(np.repeat(x, s, axis=1), s, axis=2)
        h, w = h * s, w * s
    cols = cols or int(np.ceil(np.sqrt(k)))
    rows = -(-k // cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), 255, dtype=np.uint8)
    for i in range(k):
        r, q = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = x[i]
    return out


def _png(img: np.ndarray) -> bytes:
    import imageio.v3 as iio

    if img.shape[-1] == 1:
        img = img[..., 0]
    return bytes(iio.imwrite("<bytes>", img, extension=".png"))


class Renderer:
    """Builds generators from run configs (cached, thread-safe) and renders codes to PNG bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gens: dict[str, Any] = {}
        self._png: dict[tuple[str, str], bytes] = {}

    def generator(self, table: dict[str, Any]) -> Any:
        key = json.dumps(table, sort_keys=True, default=str)
        with self._lock:
            if key not in self._gens:
                try:
                    from .. import registry

                    params = {k: v for k, v in table.items() if k != "name"}
                    factory = registry.get("generator", table["name"])
                    if "device" in registry.describe_params(factory):
                        params["device"] = "cpu"
                    self._gens[key] = registry.create("generator", table["name"], params)
                except Exception as exc:  # noqa: BLE001 - shown as "no image", logged once
                    log.warning("cannot build generator %s to draw images: %s", table.get("name"), exc)
                    self._gens[key] = exc
            gen = self._gens[key]
        if isinstance(gen, Exception):
            raise gen
        return gen

    def render(self, table: dict[str, Any], codes: list[list[int]], cache_key: str = "") -> bytes:
        """PNG bytes of the generator's images of ``codes`` (``int [k, d]``), as a grid when ``k > 1``.

        Raises:
            Exception: the generator cannot be built or the codes do not fit its space.
        """
        import torch

        ck = (json.dumps(table, sort_keys=True, default=str), cache_key)
        if cache_key and ck in self._png:
            return self._png[ck]
        gen = self.generator(table)
        I = np.asarray(codes, dtype=np.int64)[:MAX_GRID]
        if I.ndim != 2 or I.shape[1] != gen.space.d:
            raise ValueError(f"codes of shape {I.shape} do not fit the generator's space (d={gen.space.d})")
        with self._lock, torch.no_grad():
            x = gen(gen.space.decode(I))
        to_uint8 = getattr(gen, "to_uint8", None)
        if callable(to_uint8):
            imgs = np.asarray(to_uint8(x), dtype=np.uint8)
        else:
            imgs = (x.detach().cpu().float().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        out = _png(grid(imgs) if len(imgs) > 1 else grid(imgs, min_cell=128, pad=0))
        if cache_key:
            if len(self._png) > 64:
                self._png.clear()
            self._png[ck] = out
        return out
