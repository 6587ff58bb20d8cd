"""Run a torch module in eval mode for the length of a call, and give it its own modes back.

A search evaluates a user's model or generator many times; it must see the eval-mode computation
(Dropout off, BatchNorm on its running statistics, which a train-mode forward would also update), and
must leave a module that is in the middle of training as it found it::

    with eval_mode(model):
        y = model(x)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .fingerprint import modules_of

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Run the block with ``module`` (a ``torch.nn.Module``; for any other object, the modules among its direct
    attributes, :func:`mango.fingerprint.modules_of`) in eval mode, then give every submodule the train/eval
    mode it had, through its own ``train(mode)`` where the mode changed (so a module whose ``train`` override
    does more than set the flag, e.g. merging adapter weights, is undone the way it was done). Submodules are
    visited parents first, so a parent's ``train`` call, which sets its children too, is corrected where a
    child had another mode."""
    train = getattr(module, "train", None)
    modules = getattr(module, "modules", None)
    if not (callable(train) and callable(modules)):
        # a plain object (a user's generator class holding a GAN): the modules among its direct attributes,
        # the ones its weights mark covers
        with contextlib.ExitStack() as stack:
            for m in modules_of(module):
                stack.enter_context(eval_mode(m))
            yield
        return
    modes = [(m, bool(m.training)) for m in module.modules()]
    if not any(mode for _, mode in modes):          # already all in eval: nothing to change or give back
        yield
        return
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            if m.training != mode:
                m.train(mode)
