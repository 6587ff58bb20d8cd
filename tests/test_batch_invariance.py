"""A code's value does not depend on the batch it is evaluated in (issue 13 item 18).

Before fixed-width micro-batches, an odd-sized batch took other CPU kernels than an even
one, and the graded spiking score of the same code changed in its last bits (by a whole
spike near the threshold); re-scoring the recorded best alone could disagree with the run.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mango.config import build_objective
from mango.objective import Objective, default_eval_batch_size
from mango.spaces import CodebookSpace


def _objective(generator: str, target: dict, width: int | None = None) -> Objective:
    cfg = {"generator": {"name": generator}, "target": target, "budget": 10,
           "optimizer": {"name": "random"}}
    if width is not None:
        cfg["eval_batch_size"] = width
    obj = build_objective(cfg)
    obj.cache_enabled = False  # every call computes: we compare computations, not the cache
    return obj


def _compositions(obj: Objective, I: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The values of ``I`` evaluated in several batch compositions and sizes."""
    k = I.shape[0]
    out = {"one batch": obj(I)}
    perm = rng.permutation(k)
    v = np.empty(k)
    v[perm] = obj(I[perm])
    out["shuffled"] = v
    out["alone"] = np.array([obj(I[i:i + 1])[0] for i in range(k)])
    for size in (3, 7):
        out[f"chunks of {size}"] = np.concatenate([obj(I[s:s + size]) for s in range(0, k, size)])
    others = obj.space.sample(rng, 5)
    mixed = obj(np.concatenate([others[:2], I, others[2:]]))
    out["among other codes"] = mixed[2:2 + k]
    return out


def _assert_same(values: dict[str, np.ndarray]) -> None:
    ref = values["one batch"]
    for name, v in values.items():
        diff = np.flatnonzero(v != ref)
        assert diff.size == 0, (f"{name}: {diff.size} codes got another value than in one batch, e.g. query "
                                f"{diff[0]}: {v[diff[0]]!r} vs {ref[diff[0]]!r}")


def test_digits_values_do_not_depend_on_the_batch():
    obj = _objective("vqvae-digits", {"name": "snn-digits", "layer": "spiking1", "unit": 5})
    rng = np.random.default_rng(0)
    I = obj.space.sample(rng, 23)
    _assert_same(_compositions(obj, I, rng))


def test_paper_values_do_not_depend_on_the_batch(paper_weights):
    torch.manual_seed(0)
    obj = _objective("vqvae-cifar10", {"name": "snn-cifar10", "layer": "spiking1", "unit": 6, "T": 32,
                                       "backend": "torch"}, width=8)
    rng = np.random.default_rng(1)
    I = obj.space.sample(rng, 11)
    _assert_same(_compositions(obj, I, rng))


class _CountingTarget(torch.nn.Module):
    """Sum of pixels; records the batch sizes it saw."""

    def __init__(self, noisy: bool) -> None:
        super().__init__()
        self.noisy = noisy
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return x.flatten(1).sum(1)


class _Gen(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.space = CodebookSpace(d=4, n=3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.float().reshape(-1, 1, 2, 2)


@pytest.mark.parametrize("noisy", [False, True])
def test_padding_only_for_deterministic_targets(noisy):
    target = _CountingTarget(noisy)
    obj = Objective(_Gen(), target, batch_size=4, cache=False)
    I = np.array([[0, 1, 2, 0], [2, 2, 2, 2], [1, 0, 0, 1], [0, 0, 0, 0], [2, 1, 0, 2]])
    y = obj(I)
    assert y.tolist() == [3.0, 8.0, 2.0, 0.0, 5.0]  # the padding's outputs are dropped
    # a deterministic target always sees full-width passes; a rig sees only real presentations
    assert target.seen == ([4, 1] if noisy else [4, 4])
    assert obj.n_evaluated == 5


def test_default_width_by_device():
    assert default_eval_batch_size("cpu") == 10
    assert default_eval_batch_size("cuda") == 64
    obj = Objective(_Gen(), _CountingTarget(False))
    assert obj.batch_size == 10 and obj.info()["batch_size"] == 10


def test_scoring_on_cuda_turns_tf32_off_and_gives_the_setting_back():
    """cuDNN's default TF32 convolutions moved spike counts between GPU and CPU (experiments/gpu_check.py);
    scoring runs inside full_float32, which turns TF32 off for a CUDA device only and gives torch's settings
    back exactly, through torch's fp32_precision settings (the old allow_tf32 flags raise once those are
    set). The settings are plain values: this runs without a GPU."""
    from mango.devices import full_float32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    try:
        for user in (("tf32", "none"), ("ieee", "tf32")):
            conv.fp32_precision, matmul.fp32_precision = user
            with full_float32("cuda:0"):
                assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
            assert (conv.fp32_precision, matmul.fp32_precision) == user
            with full_float32("cpu"):
                assert (conv.fp32_precision, matmul.fp32_precision) == user
        with pytest.raises(ValueError), full_float32("cuda"):
            raise ValueError("an error inside gives the settings back too")
        assert (conv.fp32_precision, matmul.fp32_precision) == user
    finally:
        conv.fp32_precision, matmul.fp32_precision = before
