"""The search-quality benchmark's unit rule (experiments/search_quality.py): the held-out config's
units stay outside every excluded index, and a second config never writes over the benchmark of
record's files."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sq():
    spec = importlib.util.spec_from_file_location("search_quality_script", ROOT / "experiments" / "search_quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Space:
    def sample(self, rng, k):
        return np.zeros((k, 4), dtype=np.int64)


def _select(sq, monkeypatch, cfg, silent_units):
    """Apply the rule with fake spike counts: the units in ``silent_units[layer]`` never fire."""
    import mango.registry

    monkeypatch.setattr(mango.registry, "create", lambda *a, **k: type("G", (), {"space": _Space()})())
    n_units = {ly["name"]: int(ly["n_units"]) for ly in cfg["layers"]}

    def counts(cfg_, layer, codes):
        c = np.full(n_units[layer], 3.0)
        c[list(silent_units.get(layer, []))] = 0.0
        return c

    monkeypatch.setattr(sq, "layer_spike_counts", counts)
    return sq.select_units(cfg)["units"]


def test_heldout_units_avoid_every_excluded_index_and_keep_the_quotas(sq, monkeypatch):
    cfg = sq.load_config(ROOT / "experiments" / "search_quality_heldout.toml")
    excluded = {ly["name"]: set(ly["exclude"]) for ly in cfg["layers"]}
    # silent everywhere the rule could look: the quotas decide, in index order
    units = _select(sq, monkeypatch, cfg, {ly["name"]: range(ly["n_units"]) for ly in cfg["layers"][:2]})
    by_layer = {}
    for u in units:
        assert u["unit"] not in excluded[u["layer"]], u
        by_layer.setdefault(u["layer"], []).append(u["unit"])
    free = {name: [i for i in range(ly["n_units"]) if i not in excluded[name]]
            for ly in cfg["layers"] for name in [ly["name"]]}
    for ly in cfg["layers"][:2]:
        assert by_layer[ly["name"]] == free[ly["name"]][:ly["units"]]
    # the benchmark of record's units (as its run chose them) are all excluded
    import json

    record = json.loads((ROOT / "experiments" / "results" / "search_quality_units.json").read_text())["units"]
    assert len(record) == 12
    for u in record:
        assert u["unit"] in excluded[u["layer"]], u

def test_exclude_and_offset_outside_the_layer_are_refused(sq, monkeypatch):
    cfg = sq.load_config(ROOT / "experiments" / "search_quality_heldout.toml")
    cfg["layers"][0]["exclude"] = [3, 64]
    with pytest.raises(SystemExit, match=r"layer spiking1: .*units 0\.\.63; outside: exclude \[64\]"):
        _select(sq, monkeypatch, cfg, {})
    cfg["layers"][0]["offset"] = 70
    with pytest.raises(SystemExit, match=r"outside: offset 70, exclude \[64\]"):
        _select(sq, monkeypatch, cfg, {})
    cfg["layers"][0]["exclude"] = []
    cfg["layers"][0]["offset"] = 1
    cfg["layers"][0]["stride"] = 4
    units = _select(sq, monkeypatch, cfg, {})
    assert [u["unit"] for u in units if u["layer"] == "spiking1"] == [1, 5, 9, 13, 17]


def test_each_config_writes_its_own_files(sq, tmp_path):
    record = sq.result_files(sq.load_config(ROOT / "experiments" / "search_quality.toml"),
                             ROOT / "experiments" / "search_quality.toml")
    assert (record["units"], record["report"]) == ("search_quality_units.json", "search_quality.md")
    held = sq.result_files(sq.load_config(ROOT / "experiments" / "search_quality_heldout.toml"),
                           ROOT / "experiments" / "search_quality_heldout.toml")
    assert (held["units"], held["report"], held["config"]) == (
        "search_quality_heldout_units.json", "search_quality_heldout.md", "experiments/search_quality_heldout.toml")
    cfg = sq.load_config(ROOT / "experiments" / "search_quality.toml")
    cfg["benchmark"]["name"] = "../search_quality"
    with pytest.raises(SystemExit, match="must be a plain file name"):
        sq.result_files(cfg, tmp_path / "x.toml")
    cfg["benchmark"]["name"] = "search_quality_quick"
    with pytest.raises(SystemExit, match="may not end in _quick"):
        sq.result_files(cfg, tmp_path / "x.toml")


def test_a_units_file_of_another_rule_is_not_overwritten(sq, monkeypatch, tmp_path):
    import json

    cfg = sq.load_config(ROOT / "experiments" / "search_quality.toml")
    path = tmp_path / "search_quality_units.json"
    path.write_text(json.dumps({"rule_hash": "0123456789abcdef", "units": []}))
    monkeypatch.setattr(sq, "select_units", lambda c: pytest.fail("the units were chosen again"))
    with pytest.raises(SystemExit, match="holds the units of another rule"):
        sq.get_units(cfg, path)
    assert json.loads(path.read_text())["rule_hash"] == "0123456789abcdef"
    saved = {"rule_hash": sq.rule_hash(cfg), "units": [{"layer": "spiking1", "unit": 0}]}
    path.write_text(json.dumps(saved))
    assert sq.get_units(cfg, path) == saved


def test_a_saved_run_record_gives_back_the_curves_the_report_reads(sq, tmp_path):
    """A report keeps its runs (config hash, best rate, seconds, the best-so-far curve where it rose) so a
    later report on a fresh machine can use them: the curve read back gives the same queries-to-reach at
    every level; a record of another budget or config is not used; saving a subset keeps the rest."""
    rng = np.random.default_rng(0)
    cfg = {"optimizer": {"name": "elite"}, "target": {"T": 32}, "budget": 60}
    rows = []
    for seed in (0, 1):
        vals = rng.random(60) ** 3
        rows.append({"unit": "out[3]", "silent": False, "method": "elite", "seed": seed,
                     "config_key": sq.config_key({**cfg, "seed": seed}),
                     "best_rate": float(vals.max()), "best_so_far": np.maximum.accumulate(vals),
                     "query_index": np.arange(1, 61), "seconds": 1.5, "optimizer_seconds": 0.1, "n_queries": 60})
    path = sq.runs_record_path(tmp_path / "bench.md")
    assert path.name == "bench_runs.json"
    sq.save_runs(rows, path, budget=60, wall={"sessions": [3.0], "workers": 2})
    back = sq.load_runs(path, budget=60)
    assert set(back) == {("out[3]", "elite", s, sq.config_key({**cfg, "seed": s})) for s in (0, 1)}
    for r in rows:
        b = back[(r["unit"], r["method"], r["seed"], r["config_key"])]
        np.testing.assert_array_equal(b["best_so_far"], r["best_so_far"])
        assert b["best_rate"] == r["best_rate"] and b["recorded"]
        for level in (0.0, 0.2, 0.5, r["best_rate"], r["best_rate"] + 0.1):
            assert sq.queries_to_reach(b, level) == sq.queries_to_reach(r, level)
    assert sq.load_runs(path, budget=1000) == {}
    assert sq.load_runs(tmp_path / "none_runs.json", budget=60) == {}
    # another config (T = 16) hashes differently, so the T = 32 record never stands in for it
    assert sq.config_key({**cfg, "seed": 0, "target": {"T": 16}}) != rows[0]["config_key"]
    # a report of seed 1 alone (with a new run of it) keeps seed 0's recorded run and the wall times
    again = dict(rows[1], best_rate=0.5)
    sq.save_runs([again], path, budget=60, wall={"sessions": []})
    back = sq.load_runs(path, budget=60)
    assert len(back) == 2 and back[("out[3]", "elite", 1, rows[1]["config_key"])]["best_rate"] == 0.5
    assert back[("out[3]", "elite", 0, rows[0]["config_key"])]["best_rate"] == rows[0]["best_rate"]
    import json
    assert json.loads(path.read_text())["wall"]["sessions"] == [3.0]
