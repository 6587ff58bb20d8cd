"""Ctrl-C during a search: stop between two batches and keep what was found (the Python API's way).

A search in a notebook or a script is often stopped by hand once its best image looks good enough.
:class:`GracefulInterrupt` turns the first Ctrl-C (a notebook's "interrupt kernel") into a request the
loop reads before its next batch (``loop.maximize(..., stop=...)``): the batch in progress finishes,
is journaled, and the call returns a partial result marked ``interrupted``. A second Ctrl-C raises
``KeyboardInterrupt`` at once, as usual. Outside the main thread (where Python delivers signals) it
changes nothing. :class:`Standing` remembers where a run stands, for the message printed either way.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["GracefulInterrupt", "Standing"]

_UNSET = object()


class Standing:
    """Loop callback remembering where a run stands (queries done, best value so far)."""

    def __init__(self) -> None:
        self.n_queries = 0
        self.best_value: float | None = None

    def __call__(self, ev: Any) -> None:
        self.n_queries = int(ev.n_queries)
        self.best_value = float(ev.best_value)


class GracefulInterrupt:
    """Context manager: the first SIGINT sets :attr:`requested` (and prints so), the second raises
    ``KeyboardInterrupt``. Call the instance (``stop=gi``) to read the request."""

    def __init__(self, name: str = "mango") -> None:
        self.name = name
        self.requested = False
        self._previous: Any = _UNSET

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"{self.name}: interrupted; stopping after the batch in progress (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:      # not the main interpreter's main thread
                self._previous = _UNSET
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not _UNSET:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._previous = _UNSET
