"""VQ-VAE generator (van den Oord et al. 2017) with an EMA codebook.

Architecture (parameter names match the MANGO paper's CIFAR-10 checkpoint, so
the same class loads it)::

    encoder:  conv 4x4/2 -> ReLU -> conv 4x4/2 -> ReLU -> conv 3x3 -> residual stack
              -> 1x1 pre-VQ conv -> nearest codebook vector (Euclidean)
    decoder:  codebook vectors [k, D, h, w] -> conv 3x3 -> residual stack
              -> convT 4x4/2 -> ReLU -> convT 4x4/2 [-> sigmoid]

The latent grid is ``image_size / 4`` on each side. Residual blocks add to
``relu(x)``, not ``x`` (the paper's network was trained with an in-place ReLU at
the start of each block): ``h = relu(h); h = h + conv1x1(relu(conv3x3(h)))``;
after the last block, a ReLU.

As a MANGO generator: ``space = CodebookSpace(d=h*w, n=n_embeddings, shape=(h, w))``;
``gen(codes LongTensor [k, h, w]) -> images [k, C, image_size, image_size]``;
``gen.encode(images) -> int64 [k, h*w]``; ``gen.decode_soft(p [k, h, w, n])`` for
gradient AM over codebook mixtures.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mango.data import CIFAR10_MEAN, CIFAR10_STD
from mango.errors import ConfigError
from mango.spaces import CodebookSpace

from .common import GeneratorBase, load_state, load_weights, normalised_range

__all__ = ["VQVAE", "load_paper_vqvae", "load_vqvae"]


_OUTPUTS = ("linear", "sigmoid")


class _Residual(nn.Module):
    """``h = relu(x); return h + conv1x1(relu(conv3x3(h)))`` (the paper's in-place-ReLU skip)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self._block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, 1, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x)
        return h + self._block[3](F.relu(self._block[1](h)))


class _ResidualStack(nn.Module):
    def __init__(self, channels: int, hidden: int, n_blocks: int) -> None:
        super().__init__()
        self._layers = nn.ModuleList([_Residual(channels, hidden) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._layers:
            x = layer(x)
        return F.relu(x)


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, hidden: int, res_hidden: int, n_res: int) -> None:
        super().__init__()
        self._conv_1 = nn.Conv2d(in_channels, hidden // 2, 4, 2, 1)
        self._conv_2 = nn.Conv2d(hidden // 2, hidden, 4, 2, 1)
        self._conv_3 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self._residual_stack = _ResidualStack(hidden, res_hidden, n_res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self._conv_1(x))
        x = F.relu(self._conv_2(x))
        return self._residual_stack(self._conv_3(x))


class _Decoder(nn.Module):
    def __init__(self, embedding_dim: int, hidden: int, res_hidden: int, n_res: int, out_channels: int) -> None:
        super().__init__()
        self._conv_1 = nn.Conv2d(embedding_dim, hidden, 3, 1, 1)
        self._residual_stack = _ResidualStack(hidden, res_hidden, n_res)
        self._conv_trans_1 = nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1)
        self._conv_trans_2 = nn.ConvTranspose2d(hidden // 2, out_channels, 4, 2, 1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = self._residual_stack(self._conv_1(e))
        return self._conv_trans_2(F.relu(self._conv_trans_1(x)))


class _VectorQuantizerEMA(nn.Module):
    """Codebook ``[n, D]`` updated by exponential moving averages (no codebook loss)."""

    def __init__(self, n_embeddings: int, embedding_dim: int, decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        self._embedding = nn.Embedding(n_embeddings, embedding_dim)
        self._embedding.weight.data.normal_()
        self._embedding.weight.requires_grad_(False)
        self.register_buffer("_ema_cluster_size", torch.zeros(n_embeddings))
        self.register_buffer("_ema_w", self._embedding.weight.data.clone())
        self.decay = float(decay)
        self.eps = float(eps)

    @property
    def codebook(self) -> torch.Tensor:
        """``[n, D]`` codebook vectors."""
        return self._embedding.weight

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector of each row of ``flat [m, D]`` -> ``int64 [m]``."""
        w = self.codebook
        dist = (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ w.t() + w.pow(2).sum(1)[None, :])
        return dist.argmin(dim=1)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA step of cluster sizes and codebook from encodings ``flat [m, D]`` assigned ``idx [m]``."""
        n = self.codebook.shape[0]
        onehot = F.one_hot(idx, n).type(flat.dtype)
        self._ema_cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        total = self._ema_cluster_size.sum()
        size = (self._ema_cluster_size + self.eps) / (total + n * self.eps) * total
        self._ema_w.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        self._embedding.weight.data.copy_(self._ema_w / size[:, None])

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, threshold: float = 0.03) -> int:
        """Move codebook vectors whose EMA usage fell below ``threshold`` onto random encodings.

        Returns the number of restarted vectors (keeps all of a small codebook in use).
        """
        dead = (self._ema_cluster_size < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pick = flat[torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)]
        self._embedding.weight.data[dead] = pick
        self._ema_w[dead] = pick
        self._ema_cluster_size[dead] = 1.0
        return int(dead.numel())


class VQVAE(GeneratorBase):
    """VQ-VAE with EMA codebook, usable as a MANGO codebook generator.

    Args:
        in_channels: image channels (1 for digits, 3 for CIFAR-10).
        hidden: channels of the main convolutions (the first encoder conv and the
            last decoder transposed conv use ``hidden // 2``); paper: 128.
        res_hidden: channels inside residual blocks; paper: 32.
        n_res: residual blocks per stack; paper: 2.
        embedding_dim: codebook vector size ``D``; paper: 64.
        n_embeddings: codebook size ``n`` (the space's levels); paper: 512.
        image_size: image side (a multiple of 4); the latent grid is ``image_size // 4``.
        output: ``"linear"`` (paper: images in CIFAR-normalised space) or
            ``"sigmoid"`` (images in ``[0, 1]``).
        mean, std: per-channel normalisation of the output (``to_uint8`` undoes it);
            ``None`` for ``[0, 1]`` images.
        decay, commitment: EMA decay and commitment-loss weight (training only).

    Images: ``[k, in_channels, image_size, image_size]``; with ``output="sigmoid"``
    in ``[0, 1]``, with ``mean``/``std`` in the normalised range ``value_range``.
    """

    name = "vqvae"

    def __init__(self, in_channels: int = 3, hidden: int = 128, res_hidden: int = 32, n_res: int = 2,
                 embedding_dim: int = 64, n_embeddings: int = 512, image_size: int = 32,
                 output: str = "linear", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 decay: float = 0.99, commitment: float = 0.25) -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise ConfigError(f"unknown VQ-VAE output {output!r}; valid choices: {', '.join(_OUTPUTS)}")
        if int(image_size) % 4 or int(image_size) < 4:
            raise ConfigError(f"VQ-VAE image_size must be a positive multiple of 4, got {image_size!r}")
        if int(hidden) < 2 or int(hidden) % 2:
            raise ConfigError(f"VQ-VAE hidden must be an even number >= 2, got {hidden!r}")
        self.config: dict[str, Any] = dict(
            in_channels=int(in_channels), hidden=int(hidden), res_hidden=int(res_hidden), n_res=int(n_res),
            embedding_dim=int(embedding_dim), n_embeddings=int(n_embeddings), image_size=int(image_size),
            output=output, mean=list(mean) if mean is not None else None,
            std=list(std) if std is not None else None, decay=float(decay), commitment=float(commitment))
        self._encoder = _Encoder(in_channels, hidden, res_hidden, n_res)
        self._pre_vq_conv = nn.Conv2d(hidden, embedding_dim, 1, 1)
        self._vq_vae = _VectorQuantizerEMA(n_embeddings, embedding_dim, decay)
        self._decoder = _Decoder(embedding_dim, hidden, res_hidden, n_res, in_channels)
        side = int(image_size) // 4
        self.latent_shape = (side, side)
        self.space = CodebookSpace(d=side * side, n=int(n_embeddings), shape=self.latent_shape)
        self.output = output
        self.commitment = float(commitment)
        self.mean = tuple(float(v) for v in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        if self.mean is not None or self.std is not None:
            m = self.mean or (0.0,) * in_channels
            s = self.std or (1.0,) * in_channels
            self.value_range = normalised_range(m, s)
        else:
            self.value_range = (0.0, 1.0) if output == "sigmoid" else (-1.0, 1.0)
        self.image_shape = (int(in_channels), int(image_size), int(image_size))
        self.eval()

    # -- generator protocol ------------------------------------------------
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook indices ``LongTensor [k, h, w]`` (or ``[k, h*w]``) -> images ``[k, C, H, W]``."""
        codes = codes.to(self.device).long().reshape(codes.shape[0], *self.latent_shape)
        e = F.embedding(codes, self._vq_vae.codebook)  # [k, h, w, D]
        return self.decode_latent(e.permute(0, 3, 1, 2))

    def decode_soft(self, p: torch.Tensor) -> torch.Tensor:
        """Decode codebook mixtures: ``p`` float ``[k, h, w, n]`` (rows sum to 1) -> images ``[k, C, H, W]``.

        The latent at each position is ``p @ codebook``; a one-hot ``p`` gives the
        same images as :meth:`forward`. Differentiable wrt ``p``.
        """
        p = p.to(self.device, self._vq_vae.codebook.dtype)
        n = self.space.n
        if p.shape[-1] != n:
            raise ConfigError(f"decode_soft needs weights [k, {self.latent_shape[0]}, {self.latent_shape[1]}, {n}], "
                              f"got {tuple(p.shape)}")
        p = p.reshape(p.shape[0], *self.latent_shape, n)
        e = p @ self._vq_vae.codebook  # [k, h, w, D]
        return self.decode_latent(e.permute(0, 3, 1, 2))

    def decode_latent(self, e: torch.Tensor) -> torch.Tensor:
        """Decoder only: continuous latents ``[k, D, h, w]`` -> images ``[k, C, H, W]``."""
        x = self._decoder(e)
        return torch.sigmoid(x) if self.output == "sigmoid" else x

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder only: images ``[k, C, H, W]`` -> continuous pre-VQ latents ``[k, D, h, w]``."""
        x = images.to(self.device, self._vq_vae.codebook.dtype)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ConfigError(f"VQ-VAE encode needs images [k, {', '.join(map(str, self.image_shape))}], "
                              f"got {tuple(x.shape)}")
        return self._pre_vq_conv(self._encoder(x))

    @torch.no_grad()
    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[k, C, H, W]`` (in the generator's output space) -> ``LongTensor [k, h, w]``."""
        z = self.encode_latent(images)
        k, D, h, w = z.shape
        idx = self._vq_vae.nearest(z.permute(0, 2, 3, 1).reshape(-1, D))
        return idx.reshape(k, h, w)

    def code_vectors(self) -> np.ndarray:
        """The codebook ``float32 [n, D]``: the vector each code value decodes from (row ``v`` for value ``v``)."""
        return self._vq_vae.codebook.detach().cpu().numpy().astype(np.float32)

    def encode(self, images: torch.Tensor) -> np.ndarray:
        """Images ``[k, C, H, W]`` -> nearest-codebook indices ``int64 [k, d]`` (a search start)."""
        return self.encode_codes(images).reshape(images.shape[0], -1).cpu().numpy().astype(np.int64)

    # -- training ----------------------------------------------------------
    def training_step(self, images: torch.Tensor, restart_dead: bool = False) -> dict[str, torch.Tensor]:
        """Forward pass for training: EMA codebook update (in train mode) and losses.

        Returns ``recon`` (images), ``loss`` (reconstruction MSE + commitment),
        ``mse``, ``commit``, ``perplexity`` and ``codes``.
        """
        z = self.encode_latent(images)
        k, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)
        idx = self._vq_vae.nearest(flat.detach())
        if self.training:
            self._vq_vae.ema_update(flat.detach(), idx)
            if restart_dead:
                self._vq_vae.restart_dead(flat.detach())
        q = F.embedding(idx, self._vq_vae.codebook)
        commit = F.mse_loss(flat, q.detach())
        q = flat + (q - flat).detach()  # straight-through
        recon = self.decode_latent(q.reshape(k, h, w, D).permute(0, 3, 1, 2))
        mse = F.mse_loss(recon, images)
        counts = torch.bincount(idx, minlength=self.space.n).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return {"recon": recon, "loss": mse + self.commitment * commit, "mse": mse, "commit": commit,
                "perplexity": perplexity, "codes": idx.reshape(k, h, w)}

    def describe(self) -> str:
        c = self.config
        return (f"{self.name}: VQ-VAE {c['in_channels']}x{c['image_size']}x{c['image_size']}, "
                f"latent {self.latent_shape[0]}x{self.latent_shape[1]}, codebook {c['n_embeddings']}x{c['embedding_dim']}")


def load_vqvae(path: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None,
               **overrides: Any) -> VQVAE:
    """Load a VQ-VAE saved by :mod:`mango.generators.train_vqvae` (``{"state_dict", "config"}``).

    Raises:
        ConfigError: the file is missing, unreadable, has no stored config, or does
            not match the stored architecture.
    """
    obj = load_state(path)
    if "config" not in obj or "state_dict" not in obj:
        raise ConfigError(
            f"weights file {str(path)!r} is not a MANGO VQ-VAE checkpoint (no 'config'/'state_dict' entries); "
            "for the paper's raw CIFAR-10 state_dict use the 'vqvae-cifar10' generator / load_paper_vqvae()"
        )
    cfg = dict(obj["config"].get("model", obj["config"]))
    cfg.update(overrides)
    known = {"in_channels", "hidden", "res_hidden", "n_res", "embedding_dim", "n_embeddings", "image_size",
             "output", "mean", "std", "decay", "commitment"}
    model = VQVAE(**{k: v for k, v in cfg.items() if k in known})
    load_weights(model, path, key="state_dict")
    if name:
        model.name = name
    return model.to(device).eval()


def load_paper_vqvae(path: str | os.PathLike, device: str | torch.device = "cpu") -> VQVAE:
    """The MANGO paper's CIFAR-10 VQ-VAE (raw ``state_dict`` file, see the weights README).

    Latent 8 x 8, codebook 512 x 64; images ``[k, 3, 32, 32]`` in CIFAR-normalised
    space (mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)).

    Raises:
        ConfigError: naming ``path`` when the file is missing, corrupted or not this network.
    """
    model = VQVAE(in_channels=3, hidden=128, res_hidden=32, n_res=2, embedding_dim=64, n_embeddings=512,
                  image_size=32, output="linear", mean=CIFAR10_MEAN, std=CIFAR10_STD)
    load_weights(model, path)
    model.name = "vqvae-cifar10"
    return model.to(device).eval()
