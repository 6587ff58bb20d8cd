"""Channel selection: a multi-channel response ``[k, channels]`` -> one value per stimulus ``[k]``.

One rule for model targets (:class:`mango.objective.Objective`, torch tensors) and
recording rigs (:func:`mango.rig.closedloop.closed_loop`, numpy arrays):

=================  ==================================================================
``select``         result
=================  ==================================================================
``None``           the only channel: ``[k]`` is kept, ``[k, 1]`` becomes ``[k]``; a
                   response with several channels is refused (choose one)
``c`` (int)        channel ``c`` (``0 <= c < channels``)
``[c1, c2, ...]``  the mean of those channels
``"mean"``         the mean of all channels
a callable         applied as is: ``select(values [k, channels]) -> [k]``
=================  ==================================================================
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

from .errors import ConfigError

__all__ = ["Selection", "select_channels", "make_select", "check_selection"]

Selection = Union[int, Sequence[int], str, Callable[[Any], Any], None]
_CHOICES = "an int, a list of ints, 'mean', or None for a one-channel response"


def check_selection(select: Selection) -> Selection:
    """Validate the form of ``select`` (not the channel count); ints become ``int``, lists ``list[int]``.

    Raises:
        ConfigError: an unknown string, an empty list, a bool or a non-integer channel.
    """
    if select is None or callable(select):
        return select
    if isinstance(select, str):
        if select != "mean":
            raise ConfigError(f"unknown channel selection {select!r}; valid choices: {_CHOICES}")
        return select
    if isinstance(select, bool):
        raise ConfigError(f"channel selection must not be a bool, got {select!r}; valid choices: {_CHOICES}")
    if isinstance(select, (int, np.integer)):
        return int(select)
    try:
        idx = list(select)
    except TypeError:
        raise ConfigError(f"bad channel selection {select!r}; valid choices: {_CHOICES}") from None
    if not idx:
        raise ConfigError("channel selection list is empty")
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in idx):
        raise ConfigError(f"channel selection {select!r} must hold integers")
    return [int(c) for c in idx]


def select_channels(values: Any, select: Selection) -> Any:
    """``values [k]`` or ``[k, channels]`` (numpy array or torch tensor) -> ``[k]`` by the table above.

    Raises:
        ConfigError: a bad selection, a channel that does not exist, or several channels with ``None``.
    """
    select = check_selection(select)
    if callable(select):
        return select(values)
    if values.ndim == 1:
        values = values[:, None]
    ch = values.shape[1]
    if select is None:
        if ch != 1:
            raise ConfigError(f"the response has {ch} channels; choose with select= ({_CHOICES}; "
                              f"channels 0..{ch - 1})")
        return values[:, 0]
    if isinstance(select, str):
        return values.mean(1)
    idx = [select] if isinstance(select, int) else select
    bad = [c for c in idx if not 0 <= c < ch]
    if bad:
        raise ConfigError(f"channel {bad[0]} does not exist; the response has channels 0..{ch - 1}")
    return values[:, select] if isinstance(select, int) else values[:, idx].mean(1)


def make_select(select: Selection) -> Callable[[Any], Any]:
    """``select`` checked once, as a function ``values -> select_channels(values, select)``."""
    select = check_selection(select)
    return lambda values: select_channels(values, select)
