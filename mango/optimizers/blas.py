"""One BLAS thread for an optimizer's own small dense algebra (ridge solves, Cholesky factors).

OpenBLAS spreads even a 300 x 300 Cholesky factor over every core; when the cores are busy (the
loop's evaluations, another worker of ``mango compare``) its threads spin and wait, and such a call
took 180 ms instead of under 1 ms here (2 cores). Matrices of an optimizer's size gain nothing from
threads, so the decorated methods run with one BLAS thread (``threadpoolctl``); the limit is lifted
when they return, so the evaluation of the images is untouched.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

__all__ = ["single_blas_thread"]

F = TypeVar("F", bound=Callable[..., Any])
_controller: Any = None


def single_blas_thread(fn: F) -> F:
    """Decorator: run ``fn`` with BLAS limited to one thread (the controller is built at first use)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        global _controller
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
