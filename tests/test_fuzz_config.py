"""Property-based fuzzing of the config validator and the flag parser (issue 13, fuzzing): whatever a
TOML file, a Python dict or ``--*-param`` flags hold, :meth:`RunConfig.from_dict` and
:func:`parse_kv` raise nothing but :class:`ConfigError`, and what they accept is well typed.

CI runs the ``ci`` profile (a few hundred examples, a few seconds); ``HYPOTHESIS_PROFILE=deep``
runs many more outside CI.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mango.clitools import merge_table, parse_kv
from mango.config import TOP_KEYS, RunConfig
from mango.errors import SEED_MAX, ConfigError

settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NAMES = {"generator": ["vqvae-digits", "gan-grid", "nope"], "target": ["snn-digits", "cnn-digits", "x"],
         "problem": ["separable", "quadratic-grid", "constant", "?"],
         "optimizer": ["random", "protes", "ga", "cma", "ttopt", "zzz"]}
PARAMS = ["d", "n", "seed", "k_top", "n_elite", "rank", "qtt", "elite", "layer", "unit", "position", "T",
          "readout", "device", "lr", "k_gd", "mutation", "weights", "batch_size", "budget", "space", "x"]

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["cpu", "all", "top", "rate", "0,1", "", "inf"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=25)
keys = st.sampled_from(list(TOP_KEYS)) | st.text(max_size=8)


@st.composite
def tables(draw, kind: str):
    """A component table: a known or unknown name with random, mostly plausible parameters."""
    if draw(st.integers(0, 5)) == 0:
        return draw(values)  # not a table at all
    params = draw(st.dictionaries(st.sampled_from(PARAMS) | st.text(max_size=5), values, max_size=4))
    return {"name": draw(st.sampled_from(NAMES[kind]) | st.text(max_size=6)), **params} \
        if draw(st.booleans()) else params


@st.composite
def configs(draw):
    """A TOML-like dict: either arbitrary nesting and types, or a near-valid run config."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.dictionaries(keys, values, max_size=8))
    cfg = {}
    for key in ("seed", "budget", "batch_size", "eval_batch_size", "checkpoint_every", "device", "select",
                "name"):
        if draw(st.booleans()):
            cfg[key] = draw(values | st.integers(-3, 200))
    if draw(st.booleans()):
        cfg["problem"] = draw(tables("problem"))
    else:
        for kind in ("generator", "target"):
            if draw(st.integers(0, 4)):
                cfg[kind] = draw(tables(kind))
    if draw(st.integers(0, 4)):
        cfg["optimizer"] = draw(tables("optimizer"))
    extra = draw(st.dictionaries(keys, values, max_size=2))
    return {**cfg, **extra}


def _validated(cfg) -> RunConfig | None:
    try:
        rc = RunConfig.from_dict(cfg)
    except ConfigError:
        return None
    return rc


@given(configs())
@example({"budget": 1, "problem": {"name": "separable"}, "optimizer": None})   # was a TypeError from RunConfig
def test_run_config_raises_only_config_error(cfg):
    rc = _validated(cfg)
    if rc is not None:  # what is accepted is typed, and survives its own round trip
        assert type(rc.budget) is int and rc.budget >= 1 and type(rc.seed) is int
        for key in ("batch_size", "eval_batch_size", "checkpoint_every"):
            v = getattr(rc, key)
            assert v is None or (type(v) is int and v >= 1)
        assert RunConfig.from_dict(rc.to_dict()) == rc


@given(st.integers(-2**70, 2**70) | st.sampled_from([-1, 0, SEED_MAX, SEED_MAX + 1]))
def test_a_seed_is_accepted_exactly_in_its_range(seed):
    """Every optimizer's generator takes a seed in [0, 2**32 - 1]; the config takes exactly those, and
    refuses the rest with a ConfigError naming the seed (not a numpy or nevergrad traceback later)."""
    cfg = {"budget": 10, "seed": seed, "problem": {"name": "separable"}, "optimizer": {"name": "random"}}
    if 0 <= seed <= SEED_MAX:
        assert RunConfig.from_dict(cfg).seed == seed
    else:
        with pytest.raises(ConfigError, match=f"seed must be an integer .*got {seed}"):
            RunConfig.from_dict(cfg)


flag_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["k=1,16,16", "k=[1,16,16]", "=3", "k=", "k==", "k=[" * 3000, "k=" + "[" * 3000 + "]" * 3000,
     "k=1,,2", "k=,", "k=NaN", "k=-Infinity", "k=1e999", "k=true", "k=nUlL", 'k={"a":[1,{"b":2}]}'])


@given(st.lists(flag_text, max_size=6))
def test_parse_kv_raises_only_config_error(items):
    try:
        out = parse_kv(items, "--target-param")
    except ConfigError:
        return
    assert all(isinstance(k, str) and k for k in out)


@given(st.lists(flag_text, max_size=4), st.sampled_from(["protes", "random", "ga"]), configs())
def test_flags_over_a_config_raise_only_config_error(items, opt, cfg):
    """The command line's path: a TOML dict, ``--opt-param`` flags merged in, then validation."""
    try:
        merge_table(cfg, "optimizer", opt if items else None, items, "opt")
    except ConfigError:
        return
    _validated(cfg)


@given(raw=st.binary(max_size=200) | values.map(lambda v: __import__("json").dumps(v).encode()),
       name=st.sampled_from(["run.json", "result.json"]))
@example(raw=b"\xff\xfe{", name="run.json")
@example(raw=b'{"config": [1, 2]}', name="result.json")
def test_a_recorded_config_file_fails_only_with_config_error(tmp_path_factory, raw, name):
    """``mango run --config DIR/run.json`` (or ``result.json``, or ``--out DIR`` alone) reads a file the user
    hands over: any bytes give a dict or a ConfigError naming the file, never another exception."""
    from mango.config import load_run_config

    path = tmp_path_factory.mktemp("rec") / name
    path.write_bytes(raw)
    try:
        cfg = load_run_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(cfg, dict)
    try:
        RunConfig.from_dict(cfg)
    except ConfigError:
        pass
