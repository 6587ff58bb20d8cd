"""Objectives as composable values: what to maximize inside a model, written as ``"layer:unit"``.

A *term* names one unit of one layer; an :class:`ObjectiveExpr` is a weighted sum
of terms. Build them from strings or helpers, and combine them like numbers::

    from mango import objectives as ob
    a = ob.parse("conv2:5")                 # channel 5 of layer conv2, mean over space
    b = ob.parse("conv2:5@(3,4)")           # channel 5 at position y=3, x=4
    c = ob.class_logit(3)                   # = ob.parse("output:3") = ob.parse("logits:3")
    obj = a - 0.5 * b + 2.0 * c             # also: ob.parse("conv2:5 - 0.5*conv2:5@(3,4) + 2*output:3")
    rate_plus = ob.parse("lif2:3 + 0.01*mem(lif2:3)")   # spiking: firing rate + a small membrane term

String syntax (whitespace is free)::

    expr  := ['-'] prod (('+' | '-') prod)*
    prod  := [NUMBER '*'] atom ['*' NUMBER] ['/' NUMBER]
    atom  := ref | 'mem(' ref ')' | '(' expr ')'
    ref   := LAYER ':' INT ['@(' INT (',' INT)* ')']

``LAYER`` is a dotted submodule name (``features.3``, ``0``; a name with other characters,
such as a ModuleDict key ``conv-a``, in backquotes: ```features.conv-a`:2``, as ``str()`` writes
it back) or one of the
model-output names: ``output`` / ``logits`` (the model's output, e.g. class
logits; for a spiking net the last spiking layer, its class read-out) and
``softmax`` (softmax over the output's axis 1: a class probability in [0, 1]).

What a term's value is depends on the model, and is computed by the target that
evaluates the objective (``mango.targets``): for a torch module the layer's
output at the unit (the channel's spatial mean without a position); for a
spiking net the unit's firing rate over ``T`` steps in [0, 1] (``mem(...)``: its
mean membrane potential). The value of a sum is the weighted sum of the term
values, per image. These values carry no torch or model state: the same object
is used by the Python one-liner (:func:`mango.maximize`) and by the command line
(``--target-param objective="conv2:5 - 0.5*fc:3"``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["Term", "ObjectiveExpr", "OUTPUT_NAMES", "KINDS", "parse", "as_objective", "unit", "channel",
           "neuron", "class_logit", "class_prob", "membrane"]

#: names that mean "the model's output" (class logits of a classifier)
OUTPUT_NAMES = ("output", "logits")
#: what a term reads: the unit's value (activation / firing rate), its mean membrane (spiking),
#: or the softmax of the model output (class probability)
KINDS = ("value", "mem", "softmax")

V = TypeVar("V")


@dataclass(frozen=True)
class Term:
    """One unit of one layer.

    Attributes:
        layer: dotted submodule name, or ``"output"`` for the model's output.
        unit: channel / neuron / class index (>= 0).
        position: indices of the axes after the channel axis, e.g. ``(y, x)``; None: the
            channel's mean over them.
        kind: ``"value"``, ``"mem"`` (mean membrane of a spiking unit) or ``"softmax"``
            (class probability; layer is ``"output"``).
    """

    layer: str
    unit: int
    position: tuple[int, ...] | None = None
    kind: str = "value"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown objective term kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not isinstance(self.layer, str) or not self.layer:
            raise ConfigError(f"an objective term needs a layer name, got {self.layer!r}")
        if isinstance(self.unit, bool) or not isinstance(self.unit, int) or self.unit < 0:
            raise ConfigError(f"unit must be a non-negative integer, got {self.unit!r}")
        if self.position is not None and (not self.position or any(
                isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in self.position)):
            raise ConfigError(f"position must be non-negative integers such as (3, 4), got {self.position!r}")
        if self.kind == "softmax" and self.layer != "output":
            raise ConfigError(f"softmax reads the model output, not layer {self.layer!r}")

    def __str__(self) -> str:
        if self.kind == "softmax":
            return f"softmax:{self.unit}"
        plain = _PLAIN_NAME.fullmatch(self.layer) and self.layer not in _RESERVED
        s = f"{self.layer if plain else '`' + self.layer + '`'}:{self.unit}"
        if self.position is not None:
            s += "@(" + ",".join(str(p) for p in self.position) + ")"
        return f"mem({s})" if self.kind == "mem" else s


class ObjectiveExpr:
    """A weighted sum of :class:`Term` s: ``sum_i w_i * term_i``.

    Supports ``a + b``, ``a - b``, ``2.0 * a``, ``a * 2.0``, ``a / 2``, ``-a`` and
    ``sum([...])``; equal terms merge (their weights add). ``str(obj)`` is a string
    :func:`parse` reads back to an equal objective.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: Any = ()) -> None:
        merged: dict[Term, float] = {}
        for w, t in terms:
            if not isinstance(t, Term):
                raise ConfigError(f"objective terms must be Term values, got {type(t).__name__}")
            w = float(w)
            if not math.isfinite(w):
                raise ConfigError(f"objective weight must be finite, got {w!r}")
            merged[t] = merged.get(t, 0.0) + w
        self.terms: tuple[tuple[float, Term], ...] = tuple((w, t) for t, w in merged.items() if w != 0.0)

    # -- algebra -----------------------------------------------------------
    def __add__(self, other: Any) -> "ObjectiveExpr":
        if isinstance(other, str):
            other = parse(other)
        if not isinstance(other, ObjectiveExpr):
            if isinstance(other, (int, float)) and other == 0:      # sum([...]) starts at 0
                return self
            return NotImplemented
        return ObjectiveExpr(self.terms + other.terms)

    __radd__ = __add__

    def __sub__(self, other: Any) -> "ObjectiveExpr":
        if isinstance(other, str):
            other = parse(other)
        if not isinstance(other, ObjectiveExpr):
            return NotImplemented
        return self + (-1.0) * other

    def __rsub__(self, other: Any) -> "ObjectiveExpr":
        if isinstance(other, str):
            return parse(other) - self
        return NotImplemented

    def __mul__(self, w: Any) -> "ObjectiveExpr":
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            return NotImplemented
        return ObjectiveExpr((w * v, t) for v, t in self.terms)

    __rmul__ = __mul__

    def __truediv__(self, w: Any) -> "ObjectiveExpr":
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            return NotImplemented
        if w == 0:
            raise ConfigError("cannot divide an objective by zero")
        return self * (1.0 / w)

    def __neg__(self) -> "ObjectiveExpr":
        return self * -1.0

    def __pos__(self) -> "ObjectiveExpr":
        return self

    # -- value semantics ---------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectiveExpr) and dict((t, w) for w, t in self.terms) == \
            dict((t, w) for w, t in other.terms)

    def __hash__(self) -> int:
        return hash(frozenset((t, w) for w, t in self.terms))

    def __iter__(self) -> Iterator[tuple[float, Term]]:
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return f"ObjectiveExpr({str(self)!r})"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        out = ""
        for i, (w, t) in enumerate(self.terms):
            sign = "-" if w < 0 else "+"
            a = abs(w)
            body = str(t) if a == 1.0 else f"{a!r}*{t}"
            out += (("-" if sign == "-" else "") + body) if i == 0 else f" {sign} {body}"
        return out

    # -- for targets ---------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Distinct layers the terms read, in first-use order."""
        return list(dict.fromkeys(t.layer for _, t in self.terms))

    @property
    def single(self) -> Term | None:
        """The term when the objective is one term with weight 1, else None."""
        if len(self.terms) == 1 and self.terms[0][0] == 1.0:
            return self.terms[0][1]
        return None

    def combine(self, value: Callable[[Term], V]) -> V:
        """``sum_i w_i * value(term_i)`` (value returns e.g. a ``[k]`` tensor); the first term's
        value is scaled, never added to a Python 0, so the result keeps its type and dtype."""
        if not self.terms:
            raise ConfigError("the objective has no terms")
        total: Any = None
        for w, t in self.terms:
            v = value(t)
            v = v if w == 1.0 else w * v
            total = v if total is None else total + v
        return total


# ---------------------------------------------------------------------------
# helpers (lucent-style constructors)
# ---------------------------------------------------------------------------

def unit(layer: str, unit: int, position: tuple[int, ...] | list[int] | None = None) -> ObjectiveExpr:
    """A channel (``position=None``: mean over space) or a channel at a position."""
    return ObjectiveExpr([(1.0, Term(_layer(layer), int(unit), _pos(position)))])


def channel(layer: str, c: int) -> ObjectiveExpr:
    """Channel ``c`` of ``layer``, mean over its spatial axes (a neuron of a ``[N]`` layer)."""
    return unit(layer, c)


def neuron(layer: str, c: int, *position: int) -> ObjectiveExpr:
    """Channel ``c`` of ``layer`` at ``position`` (e.g. ``neuron("conv2", 5, 3, 4)``)."""
    return unit(layer, c, position or None)


def class_logit(c: int) -> ObjectiveExpr:
    """Class ``c`` of the model output (the logit; for a spiking net the read-out neuron's rate)."""
    return unit("output", c)


def class_prob(c: int) -> ObjectiveExpr:
    """Softmax probability of class ``c`` (over the model output's axis 1), in [0, 1]."""
    return ObjectiveExpr([(1.0, Term("output", int(c), None, "softmax"))])


def membrane(layer: str, c: int, position: tuple[int, ...] | list[int] | None = None) -> ObjectiveExpr:
    """Mean membrane potential over time of a spiking unit (a graded term beside its rate)."""
    return ObjectiveExpr([(1.0, Term(_layer(layer), int(c), _pos(position), "mem"))])


def _layer(name: str) -> str:
    if "`" in str(name):
        raise ConfigError(f"layer name {name!r} contains a backquote, which an objective string cannot write "
                          "(backquotes enclose a layer name); rename the submodule")
    return "output" if name in OUTPUT_NAMES else str(name)


def _pos(position: Any) -> tuple[int, ...] | None:
    if position is None:
        return None
    return tuple(int(p) for p in position)


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------

#: a layer name written as it is in an objective string; any other is written in backquotes
_PLAIN_NAME = re.compile(r"[A-Za-z_0-9][\w.]*")
#: words the grammar gives a meaning of its own: a layer so named is written in backquotes
_RESERVED = ("softmax", "mem")

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)(?![\w.:])   # a number not followed by ':' (a layer)
    | (?P<name>[A-Za-z_0-9][\w.]*)
    | `(?P<qname>[^`]+)`                            # a layer name with other characters: `features.conv-a`
    | (?P<op>[-+*/:@(),\[\]])
    )""", re.VERBOSE)


def _tokens(s: str) -> list[tuple[str, str, int]]:
    out, i = [], 0
    s = s.rstrip()
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m or m.end() == i:
            raise ConfigError(f"cannot parse objective {s!r} at character {i + 1} ({s[i:i + 10]!r}); "
                              "expected e.g. 'conv2:5', 'conv2:5@(3,4)', 'output:3', '0.5*fc:3 - mem(lif2:1)'")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        i = m.end()
    return out


class _Parser:
    def __init__(self, s: str) -> None:
        self.s = s
        self.toks = _tokens(s)
        self.i = 0

    def error(self, what: str) -> ConfigError:
        at = self.toks[self.i][2] + 1 if self.i < len(self.toks) else len(self.s) + 1
        return ConfigError(f"cannot parse objective {self.s!r} at character {at}: {what}; expected e.g. "
                           "'conv2:5', 'conv2:5@(3,4)', 'output:3', 'softmax:3', '0.5*fc:3 - mem(lif2:1)'")

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        t = self.peek()
        if t is None or (value is not None and t[1] != value) or (kind is not None and t[0] != kind):
            raise self.error(f"expected {value or kind}, found {t[1] if t else 'the end'!r}")
        self.i += 1
        return t[1]

    def accept(self, value: str) -> bool:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] == value:
            self.i += 1
            return True
        return False

    def expr(self) -> ObjectiveExpr:
        sign = -1.0 if self.accept("-") else 1.0
        if sign > 0:
            self.accept("+")
        total = sign * self.prod()
        while True:
            if self.accept("+"):
                total = total + self.prod()
            elif self.accept("-"):
                total = total - self.prod()
            else:
                return total

    def number(self) -> float:
        return float(self.take(kind="num"))

    def prod(self) -> ObjectiveExpr:
        w = 1.0
        t = self.peek()
        if t is not None and t[0] == "num":
            w = self.number()
            self.take("*")
        a = self.atom()
        while True:
            if self.accept("*"):
                w *= self.number()
            elif self.accept("/"):
                d = self.number()
                if d == 0:
                    raise self.error("division by zero")
                w /= d
            else:
                return w * a

    def atom(self) -> ObjectiveExpr:
        if self.accept("("):
            e = self.expr()
            self.take(")")
            return e
        t = self.peek()
        if t is not None and t[0] == "qname":
            layer, u, pos = self.ref()
            return unit(layer, u, pos)
        if t is None or t[0] != "name":
            raise self.error(f"expected a layer name, found {t[1] if t else 'the end'!r}")
        name = self.take(kind="name")
        if name == "mem" and self.accept("("):
            layer, u, pos = self.ref()
            self.take(")")
            return membrane(layer, u, pos)
        nxt = self.peek()
        if nxt is not None and nxt[0] == "op" and nxt[1] == "(":     # 'membrane(lif2:3)': a function call
            raise self.error(f"unknown function {name!r}: the only function is mem(layer:unit), the membrane "
                             "potential of a spiking unit (a plain 'layer:unit' is its activity)")
        self.i -= 1
        layer, u, pos = self.ref()
        if layer == "softmax":
            if pos is not None:
                raise self.error("softmax:<class> takes no position")
            return class_prob(u)
        return unit(layer, u, pos)

    def ref(self) -> tuple[str, int, tuple[int, ...] | None]:
        t = self.peek()
        layer = self.take(kind="qname" if t is not None and t[0] == "qname" else "name")
        if not self.accept(":"):
            raise self.error(f"expected ':' and a unit index after layer {layer!r} (e.g. '{layer}:0'; a layer "
                             "name with other characters, such as '-' or a space, goes in backquotes: "
                             "'`features.conv-a`:0')")
        u = self.take()
        if not u.isdigit():
            raise self.error(f"unit must be a non-negative integer, found {u!r}")
        pos = None
        if self.accept("@"):
            close = ")" if self.accept("(") else ("]" if self.accept("[") else None)
            vals = [self.take()]
            while self.accept(","):
                vals.append(self.take())
            if close:
                self.take(close)
            if not all(v.isdigit() for v in vals):
                raise self.error(f"position must be non-negative integers, found {vals}")
            pos = tuple(int(v) for v in vals)
        return layer, int(u), pos


def parse(s: str) -> ObjectiveExpr:
    """Parse ``"layer:unit"`` strings and their weighted sums (see the module docstring).

    Raises:
        ConfigError: malformed text, naming the position and showing valid examples.
    """
    if not isinstance(s, str) or not s.strip():
        raise ConfigError(f"objective must be a non-empty string such as 'conv2:5', got {s!r}")
    p = _Parser(s)
    e = p.expr()
    if p.peek() is not None:
        raise p.error(f"unexpected {p.peek()[1]!r}")
    return e


def as_objective(obj: "str | ObjectiveExpr | Term") -> ObjectiveExpr:
    """An :class:`ObjectiveExpr` from a string, a term or an objective (returned as is)."""
    if isinstance(obj, ObjectiveExpr):
        return obj
    if isinstance(obj, Term):
        return ObjectiveExpr([(1.0, obj)])
    if isinstance(obj, str):
        return parse(obj)
    raise ConfigError(f"objective must be a 'layer:unit' string or an ObjectiveExpr, got {type(obj).__name__}")
