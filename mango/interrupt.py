"""Ctrl-C during a search: stop between two batches and keep what was found (the Python API's way).

A search in a notebook or a script is often stopped by hand once its best image looks good enough.
:class:`GracefulInterrupt` turns the first Ctrl-C (a notebook's "interrupt kernel") into a request the
loop reads before its next batch (``loop.maximize(..., stop=...)``): the batch in progress finishes,
is journaled, and the call returns a partial result marked ``interrupted``. A second Ctrl-C raises
``KeyboardInterrupt`` at once, as usual. Outside the main thread (where Python delivers signals) it
changes nothing. :class:`SigtermAsInterrupt` makes SIGTERM take Ctrl-C's way out (the command line).
:class:`Standing` remembers where a run stands, for the message printed either way.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["GracefulInterrupt", "SigtermAsInterrupt", "Terminated", "Standing", "say_stopped"]

_UNSET = object()


class Standing:
    """Loop callback remembering where a run stands (queries done, best value so far)."""

    def __init__(self) -> None:
        self.n_queries = 0
        self.best_value: float | None = None

    def __call__(self, ev: Any) -> None:
        self.n_queries = int(ev.n_queries)
        self.best_value = float(ev.best_value)


class _SignalHandler:
    """Context manager installing :meth:`_handler` for ``signum`` in the main thread (where Python delivers
    signals; elsewhere it changes nothing) and giving the previous handler back at exit (``fallback`` when
    the previous one was not installed from Python)."""

    signum: int = signal.SIGINT
    fallback: Any = signal.default_int_handler

    def __init__(self) -> None:
        self._previous: Any = _UNSET

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(self.signum, self._handler)
            except ValueError:      # not the main interpreter's main thread
                self._previous = _UNSET
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not _UNSET:
            signal.signal(self.signum, self._previous if self._previous is not None else self.fallback)
            self._previous = _UNSET


class GracefulInterrupt(_SignalHandler):
    """Context manager: the first SIGINT sets :attr:`requested` (and prints so), the second raises
    ``KeyboardInterrupt``. Call the instance (``stop=gi``) to read the request."""

    def __init__(self, name: str = "mango") -> None:
        super().__init__()
        self.name = name
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the signal may have come in the middle of a write to sys.stderr (the
        # progress bar's), and a buffered stream written again from its own handler raises
        try:
            os.write(2, f"\n{self.name}: interrupted; stopping after the batch in progress (Ctrl-C again to "
                        "stop at once)\n".encode())
        except OSError:
            pass


class Terminated(KeyboardInterrupt):
    """SIGTERM during a command: raised where Ctrl-C's ``KeyboardInterrupt`` would be, so it takes the same
    way out (the run's journal and folder, the grid's workers); the command line exits with 143."""


class SigtermAsInterrupt(_SignalHandler):
    """Context manager: SIGTERM raises :class:`Terminated` (and :attr:`seen` is set)."""

    signum = signal.SIGTERM
    fallback = signal.SIG_DFL

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        raise Terminated()


def say_stopped(who: str, n_queries: int, budget: int, best: float | None, kept: str | None, resume: str,
                not_kept: str, returned: bool = False) -> None:
    """Print on stderr where an interrupted run stands and how to go on (the CLI's and the API's words).

    Args:
        who: the speaker, e.g. ``"mango run"``.
        n_queries, budget, best: queries done, the run's budget, the best score so far (None: none yet).
        kept: the run folder holding the journal, or None when nothing was kept.
        resume: how to resume the run from ``kept``; not_kept: how to make a run resumable.
        returned: the caller returns the partial result (the API).
    """
    lines = [f"{who}: interrupted after {n_queries} of {budget} queries; best so far "
             f"{'none yet' if best is None else f'{best:.6g}'}."
             + (" The partial result is returned (its .interrupted is True)." if returned else "")]
    lines += [f"run folder: {kept} (every finished batch is in its journal)", resume] if kept is not None \
        else [not_kept]
    print("\n".join(lines), file=sys.stderr, flush=True)
