"""Error types and helpers for messages that name the bad value and the valid choices."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class MangoError(Exception):
    """Base class of every error MANGO raises on purpose."""


class ConfigError(MangoError, ValueError):
    """A bad configuration value: the message names the key, the value and the valid choices."""

    def _render_traceback_(self) -> list[str]:
        """What IPython / Jupyter show for it: the one line, as the command line prints it, not the stack
        of MANGO's frames that checked the value (``%tb`` still shows the full traceback)."""
        return [f"ConfigError: {self}"]


class EvaluationError(MangoError, RuntimeError):
    """A generator or target returned something unusable (wrong shape, NaN, inf)."""


def choices_hint(bad: str, valid: Iterable[str], n: int = 40) -> str:
    """Return ``"valid choices: a, b, ..."`` with the names nearest to ``bad`` first."""
    valid = sorted(set(map(str, valid)))
    near = difflib.get_close_matches(str(bad), valid, n=5, cutoff=0.4)
    rest = [v for v in valid if v not in near]
    ordered = near + rest
    more = f" (+{len(ordered) - n} more)" if len(ordered) > n else ""
    return "valid choices: " + ", ".join(ordered[:n]) + more


def unknown(kind: str, bad: str, valid: Iterable[str]) -> ConfigError:
    """Build the standard error for an unknown name of some ``kind``."""
    return ConfigError(f"unknown {kind} {bad!r}; {choices_hint(bad, valid)}")


def check_int(value: object, key: str, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (numpy integers too); bools, floats (also ``2.0``) and strings
    are refused, as is a value below ``minimum``.

    Raises:
        ConfigError: naming ``key``, the bad value and what is allowed.
    """
    from numbers import Integral

    if isinstance(value, bool) or not isinstance(value, Integral):
        want = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {want}, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


SEED_MAX = 2**32 - 1   # the largest seed numpy's RandomState and nevergrad accept


def check_seed(value: object) -> int:
    """A run's seed as an ``int`` in ``[0, SEED_MAX]``, the range every optimizer's generator takes
    (nevergrad and numpy's ``RandomState`` refuse a seed >= 2**32; ``default_rng`` a negative one).

    Raises:
        ConfigError: naming the bad value and the valid range.
    """
    seed = check_int(value, "seed", minimum=0)
    if seed > SEED_MAX:
        raise ConfigError(f"seed must be an integer <= {SEED_MAX} (2**32 - 1, the largest seed numpy's "
                          f"RandomState and nevergrad accept), got {value!r}")
    return seed
