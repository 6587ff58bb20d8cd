"""Search-quality benchmark of issue 12 item 5: select units by the rule in the config, run the
grid through ``mango compare`` (resumable), and write the report.

    export MANGO_PAPER_WEIGHTS=/path/to/weights/cifar10
    python experiments/search_quality.py                       # select + run + report (full)
    python experiments/search_quality.py --select-only         # only apply the unit rule
    python experiments/search_quality.py --estimate            # measure per-query costs, predict the wall time
    python experiments/search_quality.py --methods elite protes   # a subset of methods (resumes the rest later)
    python experiments/search_quality.py --quick               # 2 units (1 silent, 1 firing), 1 seed, 100 queries
    python experiments/search_quality.py --report-only         # rebuild the report from the run folders
    python experiments/search_quality.py --config experiments/search_quality_heldout.toml --methods elite
                                                               # units kept out of all tuning (own files)

Steps:
1. **select**: the rule of ``[selection]`` / ``[[layers]]`` (stated in the TOML file) applied to
   100 seeded random codes (a layer's candidates: every ``stride``-th unit from ``offset``,
   default 0, leaving out the units listed in ``exclude``, default none); the chosen units, with whether each is silent and its largest spike
   count on those codes, go to ``experiments/results/<name>_units.json`` (``<name>``: the config's
   ``[benchmark] name``, ``search_quality`` for the benchmark of record).
2. **run**: the grid units x methods x seeds as one ``mango compare`` config (run folders under
   ``--out``, default ``runs/<name>``); a finished run is never repeated, an interrupted
   one resumes from its journal, so the script can be stopped and started again.
3. **report**: ``experiments/results/<name>.md``: median best firing rate per unit and
   method, the fraction of silent-unit runs brought to fire, the queries each method needs to
   reach the old default's (protes) 1,000-query value, and the wall time. Beside it,
   ``<report stem>_runs.json`` records every run (best rate, seconds, the best-so-far curve where
   it rose): a later report on a machine without some run folders (a fresh clone) reads those
   runs from it, so a rerun of one method adds a column without rerunning the others.

The search score is whatever the target's default readout is; the report converts every score to
the plain firing rate with the target's ``reported`` mapping (issue 12, interface 2) when the
target has one, and takes the score as the rate otherwise (the plain-rate readout).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "search_quality.toml"
RESULTS = HERE / "results"
OLD_DEFAULT = "protes"

log = logging.getLogger("search_quality")


# -- config and unit rule -----------------------------------------------------------------------
def load_config(path: Path) -> dict[str, Any]:
    import tomllib

    with open(path, "rb") as fh:
        cfg = tomllib.load(fh)
    for key in ("benchmark", "selection", "generator", "target", "layers", "optimizers"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing [{key}] (see experiments/search_quality.toml)")
    return cfg


def rule_hash(cfg: dict[str, Any]) -> str:
    """Hash of everything the unit choice depends on (the rule, the generator and the target)."""
    part = {k: cfg[k] for k in ("selection", "generator", "target", "layers")}
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _target_params(cfg: dict[str, Any], layer: str, unit: int) -> dict[str, Any]:
    t = dict(cfg["target"])
    t.update(layer=layer, unit=int(unit))
    return t


def layer_spike_counts(cfg: dict[str, Any], layer: str, codes: np.ndarray) -> np.ndarray:
    """Largest spike count of every unit of ``layer`` over ``codes`` (over positions for a channel): ``[n_units]``."""
    import torch

    from mango import registry

    gp = dict(cfg["generator"])
    gen = registry.create("generator", gp.pop("name"), gp)
    tp = _target_params(cfg, layer, 0)
    target = registry.create("target", tp.pop("name"), tp)
    out = []
    with torch.no_grad():
        for i in range(0, len(codes), 50):
            images = gen(gen.space.decode(codes[i:i + 50]))
            count, _ = target.spikes(images)  # [k, *layer shape]
            c = count.reshape(count.shape[0], count.shape[1], -1).amax(-1) if count.ndim > 2 else count
            out.append(c.float().cpu().numpy())
    return np.concatenate(out).max(0)


def select_units(cfg: dict[str, Any]) -> dict[str, Any]:
    """Apply the rule of the config: returns ``{"rule_hash", "units": [{layer, label, unit, silent, max_count}], "notes"}``."""
    from mango import registry

    sel = cfg["selection"]
    gp = dict(cfg["generator"])
    space = registry.create("generator", gp.pop("name"), gp).space
    codes = space.sample(np.random.default_rng(int(sel["silence_seed"])), int(sel["codes"]))
    units, notes = [], []
    for ly in cfg["layers"]:
        counts = layer_spike_counts(cfg, ly["name"], codes)
        if counts.shape[0] != int(ly["n_units"]):
            raise SystemExit(f"layer {ly['name']}: config says {ly['n_units']} units, the network has {counts.shape[0]}")
        excluded = {int(u) for u in ly.get("exclude", [])}
        outside = sorted(u for u in excluded if not 0 <= u < int(ly["n_units"]))
        offset = int(ly.get("offset", 0))
        if outside or not 0 <= offset < int(ly["n_units"]):
            bad = ([f"offset {offset}"] if not 0 <= offset < int(ly["n_units"]) else []) + (
                [f"exclude {outside}"] if outside else [])
            raise SystemExit(f"layer {ly['name']}: offset and every exclude entry must be units "
                             f"0..{int(ly['n_units']) - 1}; outside: {', '.join(bad)}")
        cand = [u for u in range(offset, int(ly["n_units"]), int(ly["stride"]))
                if u not in excluded]
        silent = [u for u in cand if counts[u] == 0]
        firing = [u for u in cand if counts[u] > 0]
        n_sil = min(int(ly["silent"]), len(silent))
        n_fire = min(int(ly["units"]) - n_sil, len(firing))
        n_sil = min(int(ly["units"]) - n_fire, len(silent))
        if n_sil != int(ly["silent"]):
            notes.append(f"{ly['name']}: {len(silent)} silent candidates of {len(cand)}; took {n_sil} silent "
                         f"(quota {ly['silent']}) and {n_fire} firing")
        label = ly.get("label", ly["name"])
        for u in sorted(silent[:n_sil] + firing[:n_fire]):
            units.append({"layer": ly["name"], "label": label, "unit": u, "silent": bool(counts[u] == 0),
                          "max_count": float(counts[u])})
        notes.append(f"{ly['name']}: {int((counts == 0).sum())} of {len(counts)} units silent on the "
                     f"{len(codes)} random codes")
    return {"rule_hash": rule_hash(cfg), "units": units, "notes": notes,
            "selection": sel, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def get_units(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """The chosen units: read from ``path`` when it was written for this rule, else computed and written.

    A file written for another rule is not overwritten (it may be the committed record of a benchmark):
    give the config its own ``[benchmark] name``, or delete the file to choose the units again."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("rule_hash") == rule_hash(cfg):
            return saved
        raise SystemExit(f"{path} holds the units of another rule (hash {saved.get('rule_hash')}, this config's "
                         f"is {rule_hash(cfg)}); give the config its own [benchmark] name, or delete the file "
                         "to choose the units again")
    chosen = select_units(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chosen, indent=1))
    return chosen


def result_files(cfg: dict[str, Any], config: Path) -> dict[str, str]:
    """Where a config's files go, from its ``[benchmark] name`` (default ``search_quality``): the chosen
    units ``experiments/results/<name>_units.json``, the report ``experiments/results/<name>.md`` and the
    run folders ``runs/<name>``, so a second rule (units held out from tuning, say) never overwrites the
    benchmark of record's files."""
    name = str(cfg["benchmark"].get("name", "search_quality"))
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SystemExit(f"{config}: [benchmark] name {name!r} must be a plain file name (it names the result files)")
    if name.endswith("_quick"):
        raise SystemExit(f"{config}: [benchmark] name {name!r} may not end in _quick (--quick runs add it)")
    return {"name": name, "units": f"{name}_units.json", "report": f"{name}.md", "config": _shown(config)}


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (as the report quotes it)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def unit_label(u: dict[str, Any]) -> str:
    return f"{u['label']}[{u['unit']}]"


# -- the grid -----------------------------------------------------------------------------------------
def compare_config(cfg: dict[str, Any], units: list[dict[str, Any]], methods: list[str] | None,
                   budget: int, seeds: list[int], name: str) -> dict[str, Any]:
    """One ``mango compare`` config for the chosen units (one [[targets]] table per unit, labelled like the report)."""
    b = cfg["benchmark"]
    opts = [dict(o) for o in cfg["optimizers"]]
    if methods:
        known = [o.get("label", o["name"]) for o in opts]
        bad = [m for m in methods if m not in known]
        if bad:
            raise SystemExit(f"unknown methods {bad}; valid choices: {', '.join(known)}")
        opts = [o for o in opts if o.get("label", o["name"]) in methods]
    targets = []
    for u in units:
        t = _target_params(cfg, u["layer"], u["unit"])
        t["label"] = unit_label(u)
        targets.append(t)
    out = {"name": name, "budget": int(budget), "seeds": list(seeds), "generators": [dict(cfg["generator"])],
           "targets": targets, "optimizers": opts, "workers": int(b.get("workers", 2))}
    for key in ("eval_batch_size", "device", "checkpoint_every"):
        if key in b:
            out[key] = b[key]
    out["budgets"] = [x for x in b.get("budgets", []) if x <= budget] or [budget]
    return out


# -- report ---------------------------------------------------------------------------------------------
def _rate_mapper(cfg: dict[str, Any], u: dict[str, Any]):
    """score -> plain firing rate for unit ``u`` (the target's ``reported``; identity without one)."""
    from mango import registry

    tp = _target_params(cfg, u["layer"], u["unit"])
    target = registry.create("target", tp.pop("name"), tp)
    fn = getattr(target, "reported", None)
    if fn is None:
        return lambda v: np.asarray(v, dtype=np.float64), "score (plain rate readout)"
    return (lambda v: np.asarray(fn(np.asarray(v, dtype=np.float64)), dtype=np.float64),
            getattr(target, "reported_name", "rate"))


def collect(cfg: dict[str, Any], out: Path, units: list[dict[str, Any]], specs: list[Any]) -> list[dict[str, Any]]:
    """One row per finished run of ``specs`` (``mango.compare.RunSpec``): unit, method, seed, best rate,
    best-so-far rate by query, seconds. A folder whose result.json holds another config is skipped."""
    from mango.compare import is_finished

    by_label = {unit_label(u): u for u in units}
    mappers: dict[str, Any] = {}
    rows = []
    for rs in specs:
        spec = rs.to_dict()
        folder = out / spec["folder"]
        if spec["unit"] not in by_label or not is_finished(spec["config"], folder):
            continue
        u = by_label[spec["unit"]]
        if spec["unit"] not in mappers:
            mappers[spec["unit"]] = _rate_mapper(cfg, u)[0]
        to_rate = mappers[spec["unit"]]
        res = json.loads((folder / "result.json").read_text())
        with np.load(folder / "history.npz") as h:
            values, qidx = h["values"], h["query_index"]
        rate = to_rate(values)
        rows.append({"unit": spec["unit"], "silent": u["silent"], "method": spec["optimizer"], "seed": spec["seed"],
                     "config_key": config_key(spec["config"]),
                     "best_rate": float(rate.max()) if rate.size else float("nan"),
                     "best_so_far": np.maximum.accumulate(rate), "query_index": np.asarray(qidx),
                     "seconds": float(res.get("seconds", np.nan)),
                     "optimizer_seconds": float(res.get("optimizer_seconds", np.nan)),
                     "n_queries": int(res.get("n_queries", len(values)))})
    return rows


def config_key(config: dict[str, Any]) -> str:
    """Hash of one run's full config (optimizer and its parameters, generator, target, unit, T, seed,
    budget, batches): a recorded run stands in only for a run of exactly this config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def runs_record_path(report: Path) -> Path:
    """Where a report keeps its runs' record: ``<report stem>_runs.json`` beside it."""
    return report.with_name(report.stem + "_runs.json")


def save_runs(rows: list[dict[str, Any]], path: Path, budget: int, wall: dict[str, Any] | None = None) -> None:
    """Write the rows (one per finished run) compactly: per run its config's hash, best rate, seconds and
    the best-so-far curve at the queries where it rose (``[[query, rate], ...]``), so a later report can
    use a run whose folder is gone (a fresh machine) beside runs made then; ``wall``: the invocations'
    wall times (kept from the file when empty). Runs already in the file that these rows do not replace
    (other units, seeds, budgets or configs: a report of a subset) are kept."""
    keep = []
    for r in rows:
        bsf, qi = np.asarray(r["best_so_far"]), np.asarray(r["query_index"])
        rise = np.nonzero(np.r_[True, np.diff(bsf) > 0])[0] if bsf.size else np.zeros(0, dtype=int)
        keep.append({k: r[k] for k in ("unit", "silent", "method", "seed", "config_key", "best_rate", "seconds",
                                       "optimizer_seconds", "n_queries")}
                    | {"budget": int(budget), "curve": [[int(qi[i]), float(bsf[i])] for i in rise]})
    ident = ("unit", "method", "seed", "budget", "config_key")
    if path.exists():
        old = json.loads(path.read_text())
        mine = {tuple(r[k] for k in ident) for r in keep}
        keep = [r for r in old.get("runs", []) if tuple(r.get(k) for k in ident) not in mine] + keep
        wall = wall if wall and wall.get("sessions") else old.get("wall")
    body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in keep)       # one run per line
    path.write_text('{"wall": ' + json.dumps(wall or {}) + ',\n"runs": [\n' + body + "\n]}\n")


def load_runs(path: Path, budget: int) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """Rows saved by :func:`save_runs` for ``budget``, keyed by (unit, method, seed, config hash); none
    without the file."""
    if not path.exists():
        return {}
    out = {}
    for r in json.loads(path.read_text())["runs"]:
        if int(r.get("budget", -1)) != int(budget):
            continue
        curve = np.asarray(r.pop("curve"), dtype=np.float64).reshape(-1, 2)
        n = int(r["n_queries"])
        q = np.arange(1, n + 1)
        at = np.searchsorted(curve[:, 0], q, side="right") - 1       # the last rise at or before each query
        r["best_so_far"] = np.where(at >= 0, curve[np.maximum(at, 0), 1], -np.inf)
        r["query_index"] = q
        r["recorded"] = True
        out[(r["unit"], r["method"], int(r["seed"]), str(r.get("config_key")))] = r
    return out


def queries_to_reach(row: dict[str, Any], level: float) -> float:
    """First query count at which the run's best-so-far rate reaches ``level`` (inf: never)."""
    hit = np.nonzero(row["best_so_far"] >= level - 1e-12)[0]
    return float(row["query_index"][hit[0]]) if hit.size else float("inf")


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"


def write_report(cfg: dict[str, Any], out: Path, chosen: dict[str, Any], path: Path, wall: dict[str, Any],
                 budget: int, seeds: list[int], command: str, specs: list[Any], files: dict[str, str]) -> str:
    """The report (Markdown) of ``out``'s runs into ``path``; ``files``: :func:`result_files` of the config."""
    units = chosen["units"]
    rows = collect(cfg, out, units, specs)
    record = runs_record_path(path)
    if not wall.get("sessions") and record.exists():       # a fresh machine: the wall times of the record
        wall = json.loads(record.read_text()).get("wall") or wall
    here = {(r["unit"], r["method"], int(r["seed"])) for r in rows}
    wanted = {}
    for i, spec in enumerate(s.to_dict() for s in specs):
        wanted[(spec["unit"], spec["optimizer"], int(spec["seed"]), config_key(spec["config"]))] = i
    recorded = [r for key, r in load_runs(record, budget).items() if key in wanted and key[:3] not in here]
    rows += recorded
    rows.sort(key=lambda r: wanted.get((r["unit"], r["method"], int(r["seed"]), r["config_key"]), len(wanted)))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ulabels = [unit_label(u) for u in units if any(r["unit"] == unit_label(u) for r in rows)]
    silent = {unit_label(u) for u in units if u["silent"]}

    def runs(unit=None, method=None):
        return [r for r in rows if (unit is None or r["unit"] == unit) and (method is None or r["method"] == method)]

    med = {(u, m): (float(np.median([r["best_rate"] for r in runs(u, m)])) if runs(u, m) else np.nan)
           for u in ulabels for m in methods}
    title = "" if files["name"] == "search_quality" else f": `{files['name']}`"
    lines = [f"# Search quality on the paper SNN{title} ({budget} queries, seeds {seeds})", "",
             f"Generated by `{command}` from `{files['config']}` "
             f"(units: `experiments/results/{files['units']}`, rule hash {chosen['rule_hash']}).", "",
             "Units were chosen by the rule stated in the TOML file before any search ran "
             "(silent = no spike on 100 seeded random codes). Values are plain firing rates in [0, 1] "
             "(the search score converted with the target's `reported` mapping where it has one).", ""]
    lines += ["## Median best firing rate (over seeds)", "",
              "| unit | silent | " + " | ".join(methods) + " |", "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for u in ulabels:
        best = max((med[u, m] for m in methods if np.isfinite(med[u, m])), default=np.nan)
        cells = [("**" + _fmt(med[u, m]) + "**") if np.isfinite(med[u, m]) and med[u, m] == best and best > 0
                 else _fmt(med[u, m]) for m in methods]
        lines.append(f"| {u} | {'yes' if u in silent else 'no'} | " + " | ".join(cells) + " |")
    mean_row = [np.mean([med[u, m] for u in ulabels]) for m in methods]
    lines.append("| **mean over units** | | " + " | ".join(_fmt(x) for x in mean_row) + " |")
    lines.append("")

    # silent units brought to fire
    lines += ["## Silent units brought to fire", "",
              "| method | silent-unit runs that fired | silent units fired on every seed | mean rate on silent units |",
              "| --- | --- | --- | --- |"]
    for m in methods:
        sr = [r for r in runs(method=m) if r["unit"] in silent]
        if not sr:
            continue
        per_unit = [all(r["best_rate"] > 0 for r in runs(u, m)) for u in ulabels if u in silent and runs(u, m)]
        lines.append(f"| {m} | {sum(r['best_rate'] > 0 for r in sr)}/{len(sr)} ({np.mean([r['best_rate'] > 0 for r in sr]):.0%}) "
                     f"| {sum(per_unit)}/{len(per_unit)} | {np.mean([r['best_rate'] for r in sr]):.3f} |")
    lines.append("")

    # queries to reach the old default's budget value
    if OLD_DEFAULT in methods:
        lines += [f"## Queries to reach the old default's ({OLD_DEFAULT}) {budget}-query value", "",
                  f"Per unit the level is the median over seeds of {OLD_DEFAULT}'s best rate at {budget} queries; "
                  "units where that level is 0 are left out (every run reaches it at once). "
                  f"Per method: median over (unit, seed) runs of the first query count whose best-so-far rate "
                  f"reaches the level ('> {budget}': never within the budget).", ""]
        level = {u: med[u, OLD_DEFAULT] for u in ulabels if np.isfinite(med[u, OLD_DEFAULT])}
        used = [u for u in ulabels if level.get(u, 0) > 0]
        lines += [f"Units with a level > 0: {len(used)} of {len(ulabels)}.", "",
                  "| method | median queries | runs reaching it |", "| --- | --- | --- |"]
        for m in methods:
            q = [queries_to_reach(r, level[u]) for u in used for r in runs(u, m)]
            if not q:
                continue
            mq = float(np.median(q))
            lines.append(f"| {m} | {('> %d' % budget) if not np.isfinite(mq) else int(mq)} | "
                         f"{sum(np.isfinite(q))}/{len(q)} |")
        lines.append("")

    # time
    lines += ["## Wall time", ""]
    tot = sum(r["seconds"] for r in rows)
    lines.append(f"- Runs in this report: {len(rows)}; sum of run times {tot:.0f} s "
                 f"(with {wall.get('workers', 2)} workers in parallel: about {tot / max(1, wall.get('workers', 2)):.0f} s).")
    if wall.get("sessions"):
        lines.append(f"- Wall time of the invocations that ran them: {sum(wall['sessions']):.0f} s "
                     f"({len(wall['sessions'])} invocation(s): {', '.join(f'{s:.0f}' for s in wall['sessions'])} s).")
    lines += ["", "| method | mean run time (s) | optimizer's own share of the run |", "| --- | --- | --- |"]
    for m in methods:
        rs = runs(method=m)
        share = sum(r["optimizer_seconds"] for r in rs) / max(1e-9, sum(r["seconds"] for r in rs))
        lines.append(f"| {m} | {np.mean([r['seconds'] for r in rs]):.1f} | {share:.1%} |")
    lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in chosen.get("notes", [])]
    if recorded:
        lines.append(f"- {len(recorded)} of the {len(rows)} runs come from `{_shown(record)}` (their folders were "
                     "not on the machine that wrote this report; the record keeps each run's best-so-far curve).")
    lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    save_runs(rows, record, budget, wall)
    return text


# -- estimate ---------------------------------------------------------------------------------------
def estimate(cfg: dict[str, Any], units: list[dict[str, Any]], n_methods_free: int, has_gradient: bool,
             budget: int, seeds: list[int], workers: int) -> str:
    """Measure the per-query cost of the pipeline (and of the gradient AM) on one core and predict the wall time."""
    import torch

    from mango.config import build_objective, validate_config
    from mango.loop import maximize

    torch.set_num_threads(1)
    u = units[0]
    base = {"generator": dict(cfg["generator"]), "target": _target_params(cfg, u["layer"], u["unit"]),
            "budget": 1, "seed": 0, "eval_batch_size": cfg["benchmark"].get("eval_batch_size", 50)}
    obj = build_objective(validate_config({**base, "optimizer": {"name": "random"}}))
    I = obj.space.sample(np.random.default_rng(0), 150)
    obj(I[:50])  # warm-up (compile, caches)
    t0 = time.perf_counter()
    obj(I[50:])
    per_q = (time.perf_counter() - t0) / 100
    n_free = len(units) * n_methods_free * len(seeds) * budget
    lines = [f"pipeline: {per_q * 1000:.1f} ms per query on one core ({1 / per_q:.1f} images/s)",
             f"gradient-free: {n_free} queries -> {n_free * per_q / workers / 60:.1f} min on {workers} cores"]
    total = n_free * per_q / workers
    if has_gradient:
        t0 = time.perf_counter()
        res = maximize(obj, "gradient", budget=50, seed=0)
        per_gq = (time.perf_counter() - t0) / max(1, res.n_queries)
        n_g = len(units) * len(seeds) * budget
        lines.append(f"gradient: {per_gq * 1000:.1f} ms per counted query (50-query run) -> "
                     f"{n_g * per_gq / workers / 60:.1f} min for {len(units) * len(seeds)} runs")
        total += n_g * per_gq / workers
    lines.append(f"predicted wall time: {total / 60:.1f} min on {workers} cores")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--out", type=Path, default=None, help="run folders (default runs/search_quality[_quick])")
    ap.add_argument("--report", type=Path, default=None,
                    help="report file (default experiments/results/search_quality[_quick].md)")
    ap.add_argument("--methods", nargs="+", default=None, help="run only these methods (labels in the config)")
    ap.add_argument("--units", nargs="+", default=None, help="run only these units (labels such as spiking2[5])")
    ap.add_argument("--quick", action="store_true",
                    help="proof run: the first silent and the first firing unit, seed 0, 100 queries")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--select-only", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--estimate", action="store_true", help="measure per-query costs and predict the full wall time")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config)
    b = cfg["benchmark"]
    files = result_files(cfg, args.config)
    chosen = get_units(cfg, RESULTS / files["units"])
    units = chosen["units"]
    print("units (rule applied):", ", ".join(unit_label(u) + (" (silent)" if u["silent"] else "") for u in units))
    if args.select_only:
        return 0
    budget = int(args.budget or b["budget"])
    seeds = list(args.seeds or b["seeds"])
    if args.quick:
        budget = int(args.budget or 100)
        seeds = list(args.seeds or [0])
        first_silent = next(u for u in units if u["silent"])
        first_firing = next(u for u in units if not u["silent"])
        units = [first_silent, first_firing]
    if args.units:
        known = [unit_label(u) for u in units]
        bad = [x for x in args.units if x not in known]
        if bad:
            raise SystemExit(f"unknown units {bad}; valid choices: {', '.join(known)}")
        units = [u for u in units if unit_label(u) in args.units]
    suffix = "_quick" if args.quick else ""
    out = args.out or Path("runs") / f"{files['name']}{suffix}"
    report = args.report or RESULTS / f"{files['name']}{suffix}.md"
    workers = int(args.workers or b.get("workers", 2))
    ccfg = compare_config(cfg, units, args.methods, budget, seeds, name=files["name"] + suffix)
    ccfg["workers"] = workers
    if args.estimate:
        names = [o["name"] for o in ccfg["optimizers"]]
        print(estimate(cfg, units, sum(n != "gradient" for n in names), "gradient" in names, budget, seeds, workers))
        return 0

    wall_path = out / "search_quality_wall.json"
    wall = json.loads(wall_path.read_text()) if wall_path.exists() else {"sessions": [], "workers": workers}
    if not args.report_only:
        from mango.compare import expand, run_compare

        n = len(expand(ccfg))
        count = [0]

        def progress(spec, status, info):
            count[0] += 1
            msg = {"done": lambda: f"best {info['best_value']:.4g} in {info['wall']:.1f} s",
                   "skip": lambda: "finished before", "error": lambda: f"ERROR {info}"}[status]()
            print(f"[{count[0]}/{n}] {spec.unit} | {spec.optimizer} | seed {spec.seed}: {msg}", flush=True)

        t0 = time.perf_counter()
        status = run_compare(ccfg, out, workers=workers, ray=False, progress=progress)
        if status["ran"]:
            wall["sessions"].append(time.perf_counter() - t0)
            wall["workers"] = workers
            out.mkdir(parents=True, exist_ok=True)
            wall_path.write_text(json.dumps(wall))
        if status["errors"]:
            print("errors:", json.dumps(status["errors"], indent=1))
    cmd = "python experiments/search_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from mango.compare import expand

    all_specs = expand(compare_config(cfg, units, None, budget, seeds, name=ccfg["name"]))
    text = write_report(cfg, out, chosen | {"units": units}, report, wall, budget, seeds, cmd.strip(), all_specs,
                        files=files)
    print(text)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
