"""``mango report RUN_DIR``: Markdown + self-contained HTML report of a compare or scan folder.

Reads ``RUN_DIR/compare.json`` (written by :mod:`mango.compare` and
:mod:`mango.scan`) and every run's ``result.json``, ``history.npz``,
``best.png`` and ``journal.jsonl`` (a running run's are its results so far, see
:mod:`mango.live`); a single run folder is reported as a grid of one, and a folder
with neither ``compare.json`` nor ``result.json`` (e.g. ``mango demo``'s) as the
grid of the run folders below it. A run folder with a damaged file (unreadable, truncated or malformed
``result.json`` or ``history.npz``, or a missing ``history.npz``) is left out with a one-line warning naming
the file, and listed in the report. A run that stopped short of its budget (running, interrupted, failed)
has no value past the last query it reached: its cells there read *not reached*, and the tables mark it
partial with its status. Writes into ``RUN_DIR/report/`` (or ``--out``):

* ``report.md``: the summary table (median [IQR] of the best activation at
  several budgets, queries to 50/90 % of the best any method found, normalised
  area under the best-so-far curve, wall time and optimizer share; see
  :mod:`mango.stats`), the pairwise win-rate table, and the pictures below;
* ``report.html``: the same, self-contained (images embedded as base64);
* ``convergence_<unit>.png``: best-so-far vs queries (log x), median over seeds
  with the IQR band, one line per optimizer;
* ``best_stimuli.png``: each method's best stimulus per unit with its activation;
* ``progress_<unit>.gif``: the best-so-far image during the best run of each unit,
  recomputed from the journal's codes;
* ``layer_<layer>.png`` + a per-unit table, for a layer with 4 or more units;
* a table of the runs with links to their folders, and the config they were made with.

:func:`run_summary_rows` builds the summary ``mango run`` prints at the end.

All plots use matplotlib's Agg backend.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import re
import textwrap
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .clitools import check_out_dir, slug
from .errors import ConfigError
from .imaging import display_uint8
from .journal import lock_holder_alive, read_journal
from .results import FINISHED
from .stats import Trace, UnitStats, best_at_reached, reach, summarize, win_rates

__all__ = ["load_traces", "write_report", "gif_frames", "add_arguments", "LAYER_GRID_MIN_UNITS", "SkippedRun",
           "summarize_reached", "run_status"]

log = logging.getLogger(__name__)

#: a layer with at least this many units in the grid gets a grid of every unit's best stimulus
LAYER_GRID_MIN_UNITS = 4
MAX_GIF_FRAMES = 30
#: with more units than this, convergence curves share one figure and only this many GIFs are made
MAX_UNIT_FIGURES = 6


@dataclass
class _Doc:
    """The report as an ordered list of blocks, rendered to Markdown and HTML."""

    blocks: list[tuple[str, Any]]

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (text, lang)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, val in self.blocks:
            if kind == "h":
                out.append("#" * val[0] + " " + val[1])
            elif kind == "p":
                out.append(val)
            elif kind == "table":
                header, rows = val
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join(" --- " for _ in header) + "|")
                out.extend("| " + " | ".join(r) + " |" for r in rows)
            elif kind == "img":
                alt = val[1].replace("[", "(").replace("]", ")")  # brackets would end the alt text
                out.append(f"![{alt}]({val[0].name})")
            elif kind == "code":
                out.append(f"```{val[1]}\n{val[0].rstrip()}\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        inline = inline_html
        body: list[str] = []
        for kind, val in self.blocks:
            if kind == "h":
                body.append(f"<h{val[0]}>{inline(val[1])}</h{val[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline(val)}</p>")
            elif kind == "table":
                header, rows = val
                body.append("<table><thead><tr>" + "".join(f"<th>{inline(h)}</th>" for h in header)
                            + "</tr></thead><tbody>")
                body.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append("</tbody></table>")
            elif kind == "img":
                path, alt = val
                mime = "image/gif" if path.suffix == ".gif" else "image/png"
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'
                            f"<figcaption>{html.escape(alt)}</figcaption></figure>")
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(val[0].rstrip())}</code></pre>")
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
                 "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
                 "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;image-rendering:pixelated}"
                 "figure{display:inline-block;margin:0.5em}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_INLINE = re.compile(r"`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)|\*\*(.+?)\*\*|\*([^*\s](?:[^*]*[^*\s])?)\*")


def inline_html(text: str) -> str:
    """The inline Markdown the report writes as HTML: `` `code` ``, ``[text](link)``, ``**bold**``,
    ``*emphasis*``; everything else escaped (no asterisk or backtick is left as a literal marker)."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, label, href, bold, em = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif label is not None:
            out.append(f'<a href="{html.escape(href, quote=True)}">{inline_html(label)}</a>')
        elif bold is not None:
            out.append(f"<b>{inline_html(bold)}</b>")
        else:
            out.append(f"<em>{inline_html(em)}</em>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


# -- loading ---------------------------------------------------------------------------------


class _DamagedRun(Exception):
    """A run folder whose files cannot be used: ``path`` names the file, ``problem`` says what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass
class SkippedRun:
    """A run left out of a report because a file of it is damaged: ``file`` and what is wrong with it."""

    folder: Path
    file: Path
    problem: str
    unit: str | None = None
    optimizer: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def _read_json_file(path: Path) -> Any:
    """The JSON value in ``path``.

    Raises:
        _DamagedRun: the file cannot be read, is empty, or is not valid JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _DamagedRun(path, "not UTF-8 text") from None
    except OSError as exc:
        raise _DamagedRun(path, f"cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise _DamagedRun(path, f"empty ({len(text)} bytes)")
    try:
        return json.loads(text)
    except ValueError as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise _DamagedRun(path, f"not valid JSON ({msg}{where}; truncated?)") from None


def _read_history(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``history.npz`` at ``path``, read in full (a damaged member shows up here).

    Raises:
        _DamagedRun: the file is missing, not a readable ``.npz`` archive, or lacks ``values`` /
            ``query_index`` as equal-length 1-D numeric arrays with increasing query counts.
    """
    if not path.exists():
        raise _DamagedRun(path, f"missing, though {path.with_name('result.json')} is there")
    try:
        with np.load(path) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise _DamagedRun(path, f"not a readable .npz archive ({type(exc).__name__}: {exc}; truncated?)") from None
    if "values" not in arrays and "block_best_mean" in arrays:   # not damaged: a rig-run's folder
        raise _DamagedRun(path, "a rig-run folder (per-block means, not a search run's history); its result.json "
                                "and `mango watch` show it")
    for key in ("values", "query_index"):
        if key not in arrays:
            raise _DamagedRun(path, f"has no {key!r} array (it has: {', '.join(sorted(arrays)) or 'none'})")
        if arrays[key].ndim != 1 or arrays[key].dtype.kind not in "iuf":
            raise _DamagedRun(path, f"{key!r} is a {arrays[key].dtype} array of shape {arrays[key].shape}, "
                                    "not a 1-D numeric one")
    values, queries = arrays["values"], arrays["query_index"]
    if values.shape != queries.shape:
        raise _DamagedRun(path, f"'values' ({len(values)}) and 'query_index' ({len(queries)}) differ in length")
    if not len(values):
        raise _DamagedRun(path, "holds no queries")
    if np.any(np.diff(queries) <= 0):
        raise _DamagedRun(path, "'query_index' is not increasing")
    return arrays


def _count(value: Any) -> int | None:
    """``value`` as a non-negative query count, or None when it is not one (missing, a string, a bool)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def _number(value: Any) -> float:
    """``value`` as a float, or nan when it is not a number."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def run_status(result: dict[str, Any], folder: str | Path | None = None) -> str:
    """A run's status from its ``result.json``: ``"running"``, ``"interrupted"``, ``"failed"``, ``"finished"``
    (also for a ``result.json`` written before ``status`` existed), or whatever other string it says.
    With the run's ``folder``: a run marked running whose process no longer exists (killed with SIGKILL, or
    out of memory, before it could mark itself) is ``"interrupted"``; its journal resumes it."""
    if result.get("interrupted") is True:     # a partial Result saved through the API
        return "interrupted"
    status = result.get("status", FINISHED)
    if result.get("running") is True or status == "running":
        return "interrupted" if folder is not None and lock_holder_alive(folder) is False else "running"
    return status if isinstance(status, str) and status else FINISHED


def _reached(result: dict[str, Any], values: np.ndarray, queries: np.ndarray) -> int:
    """The query count up to which a run's best-so-far is known: its ``result.json``'s ``n_queries`` when the
    history holds all of its own queries (queries an optimizer counts itself, ``n_external``, are not in the
    history and leave the best-so-far as it was), else the last query the history holds."""
    last = int(queries[-1])
    n = _count(result.get("n_queries"))
    if n is None or len(values) < n - (_count(result.get("n_external")) or 0):
        return last
    return max(last, n)


def load_traces(run_dir: str | Path) -> tuple[dict[str, Any], list[Trace]]:
    """``(manifest, traces)`` of the runs with results under ``run_dir`` (a compare/scan folder or one run folder).

    A running run's folder holds a ``result.json`` with ``"status": "running"`` and the ``history.npz``
    so far (written at improvements by :mod:`mango.live`): it is loaded with what it has. Each trace's
    ``extra["status"]`` says its status (see :func:`run_status`), :attr:`~mango.stats.Trace.reached` the query
    count its results cover and :attr:`~mango.stats.Trace.partial` whether it stopped, or has not yet got, short
    of its budget (running, interrupted, failed, or a history shorter than the budget). Runs without a ``result.json`` yet are left out with a log message
    and counted in ``manifest["missing"]``; a damaged run (an unreadable, truncated or malformed
    ``result.json``, ``history.npz``, or run config) is left out with a one-line warning naming the file
    and what is wrong, and listed in ``manifest["skipped"]`` (:class:`SkippedRun`). ``manifest["n_runs"]``
    counts every run folder looked at.

    Raises:
        ConfigError: ``run_dir`` holds neither ``compare.json`` nor ``result.json``, or its ``compare.json``
            is damaged, or it is a run folder with no readable run config.
    """
    run_dir = Path(run_dir)
    skipped: list[SkippedRun] = []
    if (run_dir / "compare.json").exists():
        try:
            manifest = _read_json_file(run_dir / "compare.json")
        except _DamagedRun as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
            raise ConfigError(f"{run_dir / 'compare.json'}: not a compare/scan manifest (no 'runs' list)")
        specs = manifest["runs"]
    elif (run_dir / "result.json").exists() or (run_dir / "run.json").exists():
        spec = _folder_spec(run_dir, run_dir)
        if spec is None:
            raise ConfigError(f"no usable run in {run_dir}: neither its run.json nor its result.json is a "
                              "readable run config with a budget")
        specs = [spec]
        manifest = {"name": run_dir.name, "budget": specs[0]["config"].get("budget"), "budgets": None,
                    "runs": specs, "single": True}
    else:
        folders = sorted({p.parent for pattern in ("*/result.json", "*/*/result.json", "*/*/*/result.json",
                                                   "*/run.json", "*/*/run.json", "*/*/*/run.json")
                          for p in run_dir.glob(pattern) if not p.parent.name.startswith(".")})
        specs = []
        for f in folders:
            spec = _folder_spec(f, run_dir)
            if spec is not None:
                specs.append(spec)
            elif (f / "result.json").exists():   # a run folder whose config cannot be read: damaged
                skipped.append(SkippedRun(f, f / "result.json", "neither it nor run.json holds a readable run "
                                                               "config with a budget"))
        if not specs and not skipped:
            raise ConfigError(f"{run_dir} is neither a compare/scan folder (no compare.json) nor a run folder "
                              "(no result.json or run.json), and no run folder lies below it")
        budgets = {_count(s["config"].get("budget")) for s in specs}
        manifest = {"name": run_dir.name, "budget": max((b for b in budgets if b), default=None), "budgets": None,
                    "runs": specs}
    unlisted = len(skipped)   # run folders without a readable config: not among the specs
    for skip in skipped:
        log.warning("skipping a damaged run: %s", skip)
    traces = []
    missing = 0
    errors = _grid_errors(run_dir)
    failed: dict[str, str] = {}        # run id -> its error, for runs that failed before writing any result
    for s in specs:
        try:
            if not isinstance(s, dict) or not isinstance(s.get("folder"), str):
                raise _DamagedRun(run_dir / "compare.json", f"a run entry is not a table with a folder: {s!r:.80}")
            folder = run_dir / s["folder"]
            if not (folder / "result.json").exists():
                if s.get("id") in errors:
                    failed[str(s["id"])] = errors[s["id"]]
                else:
                    missing += 1
                continue
            traces.append(_load_trace(folder, s))
        except _DamagedRun as exc:
            spec = s if isinstance(s, dict) else {}
            skipped.append(SkippedRun(exc.path.parent, exc.path, exc.problem, spec.get("unit"), spec.get("optimizer")))
            log.warning("skipping a damaged run: %s", exc)
    if missing:
        log.warning("%d of %d runs in %s have no results yet; the report leaves them out", missing, len(specs),
                    run_dir)
    for rid, err in failed.items():
        log.warning("run %s failed before any result (%s); the report leaves it out", rid, err)
    manifest = {**manifest, "skipped": skipped, "missing": missing, "failed": failed,
                "n_runs": len(specs) + unlisted}
    return manifest, traces


def _grid_errors(run_dir: Path) -> dict[str, str]:
    """``{run id: error}`` of a grid's last invocation (``compare_status.json``, written by ``mango compare`` and
    ``mango scan``); empty when there is none or it cannot be read."""
    try:
        errors = json.loads((run_dir / "compare_status.json").read_text()).get("errors")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}


def _load_trace(folder: Path, spec: dict[str, Any]) -> Trace:
    """The :class:`~mango.stats.Trace` of the run in ``folder`` (its ``result.json`` and ``history.npz``).

    Raises:
        _DamagedRun: a file is unreadable, truncated or malformed; the message names it and what is wrong.
    """
    res = _read_json_file(folder / "result.json")
    if not isinstance(res, dict):
        raise _DamagedRun(folder / "result.json", f"holds a JSON {type(res).__name__}, not an object")
    h = _read_history(folder / "history.npz")
    cfg = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    budget = _count(cfg.get("budget"))
    if budget is None:
        raise _DamagedRun(folder / "run.json", f"the run config has no budget (budget={cfg.get('budget')!r})")
    try:
        seed = int(spec.get("seed", 0))
    except (TypeError, ValueError):
        raise _DamagedRun(folder / "run.json", f"the seed is not an integer (seed={spec.get('seed')!r})") from None
    # what the user asked to maximize: a spiking unit's firing rate (history's "reported"), not the
    # graded search score, whose sub-threshold tie term would read as a rate of a silent unit
    rep = res.get("reported") if isinstance(res.get("reported"), dict) else {}
    rname = str(rep.get("name") or "value")
    use_rep = (rname != "value" and "reported" in h and h["reported"].shape == h["values"].shape
               and h["reported"].dtype.kind in "iuf")
    values = h["reported"] if use_rep else h["values"]
    status = run_status(res, folder)
    reached = _reached(res, h["values"], h["query_index"])
    return Trace(unit=str(spec.get("unit")), optimizer=str(spec.get("optimizer")), seed=seed,
                 queries=h["query_index"], values=values, seconds=_number(res.get("seconds")),
                 optimizer_seconds=_number(res.get("optimizer_seconds")), budget=budget,
                 reached=reached, partial=status != FINISHED or reached < budget,
                 extra={"folder": folder, "config": cfg, "meta": spec.get("meta") or {},
                        "best_value": res.get("best_value"),
                        "reported_name": rname if use_rep else "value",
                        "best_score": float(np.max(h["values"])),
                        "status": status,
                        "n_queries": _count(res.get("n_queries")),
                        "batch_size": _effective_batch_size(res, cfg)})


def _folder_spec(folder: Path, root: Path) -> dict[str, Any] | None:
    """A run spec (as in ``compare.json``) for a run folder, from its ``run.json`` or ``result.json``."""
    cfg = None
    for name in ("run.json", "result.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        cfg = data.get("config", data) if name == "result.json" and isinstance(data, dict) else data
        if isinstance(cfg, dict) and cfg:
            break
    if not isinstance(cfg, dict) or _count(cfg.get("budget")) is None:
        return None
    target = cfg.get("target") if isinstance(cfg.get("target"), dict) else {}
    problem = cfg.get("problem")
    if problem:
        unit = str(problem.get("name")) if isinstance(problem, dict) else str(problem)
    else:
        unit = str(target.get("name", "target"))
        if target.get("layer") is not None:
            unit += f":{target['layer']}"
        if target.get("unit") is not None:
            unit += f"[{target['unit']}]"
    opt = cfg.get("optimizer")
    opt = opt.get("name") if isinstance(opt, dict) else str(opt)
    rel = Path(os.path.relpath(folder, root)).as_posix()
    meta = {"target": target.get("name"), "layer": target.get("layer"), "unit": target.get("unit")} if target else {}
    return {"id": rel, "unit": unit, "optimizer": opt, "seed": cfg.get("seed", 0), "config": cfg, "folder": rel,
            "meta": meta}


def _effective_batch_size(result: dict[str, Any], config: dict[str, Any]) -> int | None:
    """Queries per ask a run used: ``result.json``'s ``batch_size`` (written by the loop), else the run
    config's, else the optimizer's default parameter; ``None`` when none of them says."""
    b = result.get("batch_size", config.get("batch_size"))
    if b is None and isinstance(config.get("optimizer"), dict):
        try:
            b = registry.describe_params(registry.get("optimizer", config["optimizer"]["name"])).get("batch_size")
        except ConfigError:  # an optimizer no longer installed: the report still shows the run
            b = None
    return int(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None


def default_budgets(budget: int) -> list[int]:
    """Report budgets: 10 %, 30 % and 100 % of the run budget (rounded, distinct, >= 1)."""
    return sorted({max(1, int(round(budget * f))) for f in (0.1, 0.3, 1.0)})


def report_budgets(configured: Any, budget: int) -> tuple[list[int], list[int]]:
    """``(shown, dropped)``: the query counts of the summary's "best @ N" columns, from the config's
    ``budgets`` (else :func:`default_budgets`), and those of them left out for lying above ``budget``, the
    largest budget of the runs (no run goes that far; all of them are left out: the default budgets)."""
    asked = sorted({c for c in map(_count, configured if isinstance(configured, list) else []) if c})
    shown = [b for b in asked if b <= budget]
    return (shown or default_budgets(budget)), [b for b in asked if b > budget]


def _run_counts(traces: list[Trace], manifest: dict[str, Any]) -> str:
    """The report's opening count of runs, e.g. ``"4 runs: 2 finished, 1 interrupted (results so far),
    1 skipped as damaged (see Skipped runs)"``."""
    counts: dict[str, int] = {}
    for t in traces:
        label = _partial_label(t) if t.partial else FINISHED
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{counts.pop(FINISHED)} finished"] if FINISHED in counts else []
    running = counts.pop("running", 0)
    parts += [f"{n} {label}" for label, n in counts.items()] + ([f"{running} still running"] if running else [])
    if running or set(counts) - {"stopped early"}:
        parts[-1] += " (results so far)"
    skipped, missing = len(manifest.get("skipped") or []), int(manifest.get("missing") or 0)
    if skipped:
        parts.append(f"{skipped} skipped as damaged (see Skipped runs)")
    if missing:
        parts.append(f"{missing} without results yet")
    failed = len(manifest.get("failed") or {})
    if failed:
        parts.append(f"{failed} failed before any result (errors in compare_status.json)")
    n = manifest.get("n_runs", len(manifest.get("runs") or []))
    return f"{n} run{'s' * (n != 1)}: " + ", ".join(parts)


# -- formatting -------------------------------------------------------------------------------
def _fmt(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "never" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _fmt_q(v: float, reached: int, n: int, reached_median: float = float("inf"), responded: bool = True,
           pending: int = 0) -> str:
    """A "queries to 50/90 %" cell: the median over seeds, how many seeds got there, plainly worded.

    ``pending``: seeds whose run stopped (or has not yet got) short of its budget without getting there;
    they are not counted as never getting there, and their median is over the other seeds.
    """
    if not responded:
        return "unit never responded"
    if reached == 0 and pending and pending == n:
        return "not reached yet (partial run)" if n == 1 else f"not reached yet (0 of {n} seeds; partial runs)"
    if reached == 0:
        return "never reached" if n == 1 else f"never reached (0 of {n} seeds)"
    if math.isinf(v) or math.isnan(v):
        return f"only {reached} of {n} seeds reached it (median of those: {_query(reached_median)})"
    return _query(v) + (f" ({reached} of {n} seeds)" if reached < n else "")


def _query(v: float) -> str:
    """A median query count: whole numbers as such, a median between two counts with its .5 (round() took
    1.5 to 2 and 2.5 to 2)."""
    return f"{int(v)}" if float(v).is_integer() else f"{v:.1f}"


#: a "best @ N" cell where no seed's run got to N queries
NOT_REACHED = "not reached"


@dataclass
class Coverage:
    """How far the seeds of one (unit, optimizer) got: for the summary table's cells of partial runs."""

    seeds: int
    #: report budget -> seeds whose run got to that many queries
    at: dict[int, int] = field(default_factory=dict)
    #: statuses of the partial runs (stopped, or not yet got, short of their budget), e.g. ["interrupted"]
    partial: list[str] = field(default_factory=list)
    #: seeds whose run covers the AUC's whole range
    auc: int = 0
    #: runs of this (unit, optimizer) left out as damaged (see :class:`SkippedRun`)
    skipped: int = 0
    #: the query count each seed's run reached (``inf``: a trace that does not say)
    reached: list[float] = field(default_factory=list)


def _partial_label(t: Trace) -> str:
    """A partial run's status as the tables show it: its own status, or "stopped early" for a finished one."""
    status = str(t.extra.get("status", FINISHED))
    return "stopped early" if status == FINISHED else status


def summarize_reached(traces: list[Trace], budgets: list[int], budget: int, fractions: tuple[float, float] = (0.5, 0.9),
                      ) -> tuple[list[UnitStats], dict[tuple[str, str], Coverage]]:
    """:func:`mango.stats.summarize` (which carries no value past the query count a run reached,
    :attr:`~mango.stats.Trace.reached`) and, per (unit, optimizer), how far its seeds got.

    Returns:
        ``(stats, coverage)``: ``coverage[(unit, optimizer)]`` says how many seeds got how far.
    """
    stats = summarize(traces, budgets, budget, fractions)
    coverage: dict[tuple[str, str], Coverage] = {}
    for s in stats:
        ts = [t for t in traces if t.unit == s.unit and t.optimizer == s.optimizer]
        got = np.array([reach(t) for t in ts])
        coverage[(s.unit, s.optimizer)] = Coverage(
            seeds=len(ts), at={int(b): int(np.sum(got >= b)) for b in budgets},
            partial=[_partial_label(t) for t in ts if t.partial], auc=int(np.sum(got >= budget)),
            reached=got.tolist())
    return stats, coverage


def summary_table(stats: list[UnitStats], budgets: list[int],
                  coverage: dict[tuple[str, str], Coverage] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table; the best median at the largest budget per unit is bold.

    With ``coverage`` (see :func:`summarize_reached`): a "best @ N" cell no seed got to reads
    :data:`NOT_REACHED`, one only some seeds got to says how many, and only a cell every seed got to can be
    bold; the seeds cell names the partial runs (e.g. ``"2 (1 partial: interrupted)"``).
    """
    header = ["unit", "optimizer", "seeds", "batch"] + [f"best @ {b} (median [IQR])" for b in budgets] + [
        "queries to 50 %", "queries to 90 %", "AUC", "wall s", "optimizer %"]
    coverage = coverage or {}
    final = budgets[-1]

    def full(s: UnitStats, b: int) -> bool:
        cov = coverage.get((s.unit, s.optimizer))
        return cov is None or cov.at.get(b, cov.seeds) >= cov.seeds

    top: dict[str, float] = {}
    for s in stats:
        top[s.unit] = max(top.get(s.unit, -np.inf), np.nan_to_num(s.best_at[final][0], nan=-np.inf))
    rows = []
    for s in stats:
        cov = coverage.get((s.unit, s.optimizer))
        seeds = str(s.seeds)
        notes = []
        if cov is not None and cov.partial:
            notes.append(f"{len(cov.partial)} partial: {', '.join(sorted(set(cov.partial)))}")
        if cov is not None and cov.skipped:
            notes.append(f"{cov.skipped} more skipped as damaged")
        if notes:
            seeds += f" ({'; '.join(notes)})"
        cells = [s.unit, s.optimizer, seeds, s.batch_size]
        for b in budgets:
            m, lo, hi = s.best_at[b]
            got = cov.at.get(b, cov.seeds) if cov is not None else s.seeds
            if got == 0:
                ends = sorted({int(r) for r in (cov.reached if cov is not None else []) if r < b})
                stop = "" if not ends else f" (stopped at {ends[0]})" if len(ends) == 1 else \
                    f" (stopped at {ends[0]}-{ends[-1]})"
                cells.append(NOT_REACHED + stop)
                continue
            cell = f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]"
            if got < s.seeds:
                cell += f" ({got} of {s.seeds} seeds)"
            if b == final and m == top[s.unit] and s.responded and full(s, b):
                cell = f"**{cell}**"
            cells.append(cell)
        auc = _fmt(s.auc, 3)
        if cov is not None and 0 < cov.auc < s.seeds and not math.isnan(s.auc):
            auc += f" ({cov.auc} of {s.seeds} seeds)"
        cells += [_fmt_q(s.q50, s.reached50, s.seeds, s.q50_reached, s.responded, s.pending[0]),
                  _fmt_q(s.q90, s.reached90, s.seeds, s.q90_reached, s.responded, s.pending[1]), auc,
                  ("-" if math.isnan(s.seconds) else f"{s.seconds:.1f}"), ("-" if math.isnan(s.optimizer_share) else f"{100 * s.optimizer_share:.1f}")]
        rows.append(cells)
    return header, rows


# -- pictures ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _strict(obj: Any) -> Any:
    """``obj`` with every non-finite float (a level never reached: inf; no value: nan) as ``None``, so that
    ``summary.json`` is strict JSON (``Infinity`` and ``NaN`` are not)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _value_label(traces: list[Trace]) -> str:
    """What the curves show: ``"best firing rate so far"`` when the runs report a rate, else the activation."""
    names = {t.extra.get("reported_name", "value") for t in traces}
    return "best firing rate so far" if names == {"rate"} else "best activation so far"


def plot_convergence(traces: list[Trace], unit: str, path: Path, budget: int) -> Path:
    """Best-so-far vs queries (log x) for one unit: median over seeds and IQR band per optimizer."""
    plt = _plt()
    grid = np.unique(np.round(np.geomspace(1, budget, 200)).astype(np.int64))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    opts = list(dict.fromkeys(t.optimizer for t in traces if t.unit == unit))
    cmap = plt.get_cmap("tab10")
    for i, o in enumerate(opts):
        curves = np.array([best_at_reached(t, grid) for t in traces if t.unit == unit and t.optimizer == o])
        with np.errstate(all="ignore"), _quiet_nan():
            med = np.nanmedian(curves, axis=0)
            lo, hi = np.nanpercentile(curves, 25, axis=0), np.nanpercentile(curves, 75, axis=0)
        color = cmap(i % 10)
        ax.plot(grid, med, color=color, lw=1.8, label=f"{o} (n={len(curves)})")
        ax.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("queries (images evaluated)")
    ax.set_ylabel(_value_label([t for t in traces if t.unit == unit]))
    ax.set_title(f"{unit}: median and IQR over seeds", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_convergence_grid(traces: list[Trace], units: list[str], path: Path, budget: int) -> Path:
    """Small multiples of best-so-far vs queries (log x), one panel per unit, median line per optimizer."""
    plt = _plt()
    grid = np.unique(np.round(np.geomspace(1, budget, 100)).astype(np.int64))
    ncol = min(6, len(units))
    nrow = math.ceil(len(units) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 1.9 * nrow + 0.5), dpi=90, squeeze=False,
                             sharex=True)
    opts = list(dict.fromkeys(t.optimizer for t in traces))
    cmap = plt.get_cmap("tab10")
    for ax in axes.flat:
        ax.axis("off")
    for ax, u in zip(axes.flat, units):
        ax.axis("on")
        for i, o in enumerate(opts):
            curves = [best_at_reached(t, grid) for t in traces if t.unit == u and t.optimizer == o]
            if curves:
                with _quiet_nan():
                    ax.plot(grid, np.nanmedian(np.array(curves), axis=0), color=cmap(i % 10), lw=1.2, label=o)
        ax.set_xscale("log")
        ax.set_title(u, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel("queries (log scale)", fontsize=9)
    fig.supylabel(f"{_value_label(traces)} (median over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class _quiet_nan:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def fit_title(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped onto lines that fit a figure ``width_in`` inches wide at ``fontsize`` points
    (an average character is taken as 0.6 em wide, with a margin), so a suptitle is never clipped."""
    chars = max(8, int(0.9 * width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def _read_png(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def _best_trace(traces: list[Trace]) -> Trace:
    return max(traces, key=lambda t: (t.best, -t.seed))


def plot_best_stimuli(traces: list[Trace], path: Path) -> Path | None:
    """Rows: units; columns: optimizers; each cell the best stimulus over seeds with its activation."""
    units = list(dict.fromkeys(t.unit for t in traces))
    opts = list(dict.fromkeys(t.optimizer for t in traces))
    cells: dict[tuple[str, str], tuple[np.ndarray, Trace]] = {}
    for u in units:
        for o in opts:
            ts = [t for t in traces if t.unit == u and t.optimizer == o]
            if ts:
                best = _best_trace(ts)
                img = _read_png(best.extra["folder"] / "best.png")
                if img is not None:
                    cells[(u, o)] = (img, best)
    if not cells:
        return None
    plt = _plt()
    width = max(3.0, 1.55 * len(opts) + 0.6)
    fig, axes = plt.subplots(len(units), len(opts), figsize=(width, 1.75 * len(units) + 0.6),
                             dpi=100, squeeze=False)
    for i, u in enumerate(units):
        for j, o in enumerate(opts):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (u, o) in cells:
                img, t = cells[(u, o)]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
                ax.set_title(f"{_fmt(t.best, 3)} (seed {t.seed})", fontsize=7)
            else:
                ax.axis("off")
            if i == 0:
                ax.text(0.5, 1.28, o, transform=ax.transAxes, ha="center", va="bottom", fontsize=8, weight="bold")
            if j == 0:
                ax.set_ylabel(u, fontsize=7)
    fig.suptitle(fit_title("best stimulus per method (activation above each image)", width, 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _generator_images(config: dict[str, Any], I: np.ndarray) -> np.ndarray | None:
    """Decode codes with the config's generator (only; no target) to uint8 ``[k, H, W(, C)]``."""
    if "generator" not in config:
        return None
    import torch  # third-party, only when pictures are made

    params = dict(config["generator"])
    gen = registry.create("generator", params.pop("name"), params)
    with torch.no_grad():
        x = gen(gen.space.decode(np.asarray(I, dtype=np.int64), torch.device(config.get("device") or "cpu")))
    arr = display_uint8(x, gen)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def gif_frames(folder: Path, max_frames: int = MAX_GIF_FRAMES) -> tuple[np.ndarray, list[int], list[float]]:
    """Codes of the best-so-far improvements of a run, from its journal: ``(I [f, d], queries, values)``.

    At most ``max_frames`` improvements (evenly chosen; the first and last always kept).
    """
    rows = read_journal(folder)
    best = -np.inf
    codes, queries, values = [], [], []
    q = 0
    for r in rows:
        q += r.external
        for i, v in enumerate(r.y):
            q += 1
            if v > best:
                best = float(v)
                codes.append(r.I[i])
                queries.append(q)
                values.append(best)
    if len(codes) > max_frames:
        keep = np.unique(np.round(np.linspace(0, len(codes) - 1, max_frames)).astype(int))
        codes = [codes[k] for k in keep]
        queries = [queries[k] for k in keep]
        values = [values[k] for k in keep]
    return np.array(codes, dtype=np.int64), queries, values


def make_gif(trace: Trace, path: Path) -> Path | None:
    """Animated GIF of the best-so-far image of one run (recomputed from its journal)."""
    codes, queries, values = gif_frames(trace.extra["folder"])
    if not len(codes):
        return None
    imgs = _generator_images(trace.extra["config"], codes)
    if imgs is None:
        return None
    name = trace.extra.get("reported_name", "value")
    if name != "value":    # label a frame with what the run reports (a firing rate), not the search score
        shown = dict(zip(trace.queries.tolist(), trace.values.tolist()))
        labels = [f"{name} {_fmt(shown.get(q, float('nan')), 3)}" for q in queries]
    else:
        labels = [f"activation {_fmt(v, 3)}" for v in values]
    plt = _plt()
    frames = []
    for img, q, label in zip(imgs, queries, labels):
        fig, ax = plt.subplots(figsize=(2.0, 2.25), dpi=72)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"query {q}\n{label}", fontsize=8)
        fig.tight_layout(pad=0.3)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    import imageio.v3 as iio

    # one frame per improvement, the last one held longer; a run that never improved on its
    # first query has a single frame (imageio wants a scalar duration then, not a list)
    durations: list[int] | int = [400] * (len(frames) - 1) + [1500] if len(frames) > 1 else 1500
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations, loop=0)
    return path


def _layer_groups(traces: list[Trace]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for t in traces:
        meta = t.extra.get("meta") or {}
        if meta.get("target") is None or meta.get("unit") is None:
            continue
        key = f"{meta['target']}:{meta.get('layer') or 'default'}"
        if t.unit not in groups.setdefault(key, []):
            groups[key].append(t.unit)
    return {k: v for k, v in groups.items() if len(v) >= LAYER_GRID_MIN_UNITS}


def plot_layer_grid(traces: list[Trace], units: list[str], title: str, path: Path) -> Path | None:
    """A grid of every unit's best stimulus (best over optimizers and seeds) with unit label and activation."""
    cells = []
    for u in units:
        best = _best_trace([t for t in traces if t.unit == u])
        img = _read_png(best.extra["folder"] / "best.png")
        if img is not None:
            unit_id = (best.extra.get("meta") or {}).get("unit", u)
            cells.append((img, unit_id, best.best))
    if not cells:
        return None
    plt = _plt()
    ncol = min(10, len(cells))
    nrow = math.ceil(len(cells) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.5 * nrow + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, unit_id, v) in zip(axes.flat, cells):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"unit {unit_id}: {_fmt(v, 3)}", fontsize=7)
    fig.suptitle(fit_title(title, 1.3 * ncol, 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- the report ---------------------------------------------------------------------------------
#: names of the pictures a report writes (a rewrite removes only these, never the user's files)
_REPORT_PICTURES = ("convergence.png", "convergence_*.png", "best_stimuli.png", "progress_*.gif", "layer_*.png")


def _remove_stale_pictures(out: Path) -> None:
    """Delete pictures an earlier report wrote into ``out`` (units may have changed since)."""
    for pattern in _REPORT_PICTURES:
        for old in out.glob(pattern):
            old.unlink()


def _summary_section(doc: _Doc, stats: list[UnitStats], budgets: list[int],
                     coverage: dict[tuple[str, str], Coverage] | None = None, note: str = "") -> None:
    doc.h(2, "Summary")
    doc.p("Values are what each run reports: for a spiking unit its firing rate (spikes / T, over a channel's "
          "positions), not the graded readout the search scores with (the rate plus a sub-threshold tie term "
          "below one spike; the Runs table gives both). "
          "Best activation at several budgets (median over seeds, [25th, 75th percentile]); the best median at "
          "the full budget per unit in bold. *Queries to 50/90 %*: median queries until the best-so-far reached "
          "50/90 % of the best value any method found for that unit (measured from 0, or from the lowest value "
          "seen when activations go negative); (k of n seeds): seeds that got there; *unit never responded*: every "
          "query of every method gave the same value (e.g. a rate of 0), so there is nothing to reach and no best in bold. *batch*: queries per ask the runs "
          "used (an optimizer entry's batch_size, else the config's top-level one, else the optimizer's default; "
          "'-' where unknown). *AUC*: mean of the normalised "
          "best-so-far curve over queries 1..budget (1 = best value at the first query). *wall s*: median run "
          "time; *optimizer %*: share of wall time spent in the optimizer's ask/tell (gradient AM runs its forward "
          "and backward passes inside ask, so its share includes them; its budget counts every forward pass, and "
          "its first hard image is evaluated after its first block of Adam steps, hence '-' at small budgets).")
    if coverage and any(c.partial for c in coverage.values()):
        doc.p("*Partial runs* (the seeds column names them: running, interrupted, failed, or stopped early) "
              "have no value past the last query they reached: *not reached* in a best @ N column means no "
              "seed's run got to N queries, and (k of n seeds) after a value that only k did (the median is "
              "theirs, and only a column every seed reached is set in bold); the AUC is over the seeds that ran "
              "the whole budget ('-' when none did), and a partial run that did not reach 50/90 % in the "
              "queries it ran counts as not there yet, not as never.")
    if note:
        doc.p(note)
    header, rows = summary_table(stats, budgets, coverage)
    doc.table(header, rows)


def _win_section(doc: _Doc, traces: list[Trace]) -> None:
    """Pairwise win rates of the optimizers over the runs that ran their whole budget (partial runs left out:
    a run stopped at 50 queries would lose to one that ran 1500)."""
    whole = [t for t in traces if not t.partial]
    opts, W, _ = win_rates(whole, list(dict.fromkeys(t.optimizer for t in whole)))
    left = len(traces) - len(whole)
    if len(opts) <= 1:
        if left and len({t.optimizer for t in traces}) > 1:
            doc.h(2, "Win rates")
            doc.p(f"None: without the {left} partial run{'s' * (left != 1)} (see Runs), which would lose for "
                  "want of queries, fewer than two optimizers have runs that ran their whole budget.")
        return
    doc.h(2, "Win rates")
    doc.p("Share of (unit, seed) pairs where the row's optimizer found a strictly higher best activation "
          "than the column's (ties count 1/2)." + (f" {left} partial run{'s' * (left != 1)} (see Runs) "
                                                   f"{'is' if left == 1 else 'are'} left out." if left else ""))
    wrows = [[a] + [("-" if i == j else f"{W[i, j]:.2f}") for j in range(len(opts))] + [
        f"{np.nanmean(np.delete(W[i], i)):.2f}"] for i, a in enumerate(opts)]
    doc.table(["optimizer"] + opts + ["mean"], wrows)


def _picture_sections(doc: _Doc, traces: list[Trace], units: list[str], out: Path, budget: int,
                      gifs: bool) -> None:
    """Convergence curves, best stimuli and (with ``gifs``) the search-progress GIFs."""
    doc.h(2, "Convergence")
    if len(units) <= MAX_UNIT_FIGURES:
        for u in units:
            doc.img(plot_convergence(traces, u, out / f"convergence_{slug(u)}.png", budget), f"convergence, {u}")
    else:
        p = plot_convergence_grid(traces, units, out / "convergence.png", budget)
        doc.img(p, f"convergence of all {len(units)} units")
    p = plot_best_stimuli(traces, out / "best_stimuli.png")
    if p is None:
        return
    doc.h(2, "Best stimuli")
    doc.p("Each method's best stimulus per unit (best seed), with its activation.")
    doc.img(p, "best stimulus per unit and method")
    if not gifs:
        return
    doc.h(2, "Search progress")
    doc.p("The best-so-far image during the best run of each unit (frames at improvements, recomputed from "
          "the run's journal).")
    ranked = sorted(units, key=lambda u: -_best_trace([t for t in traces if t.unit == u]).best)
    if len(units) > MAX_UNIT_FIGURES:
        doc.p(f"(the {MAX_UNIT_FIGURES} units with the highest activations of {len(units)})")
    for u in [u for u in units if u in ranked[:MAX_UNIT_FIGURES]]:
        best = _best_trace([t for t in traces if t.unit == u])
        try:
            g = make_gif(best, out / f"progress_{slug(u)}.gif")
        except Exception as exc:  # noqa: BLE001 - a missing generator must not sink the report
            log.warning("no GIF for %s: %s", u, exc)
            g = None
        if g is not None:
            doc.img(g, f"{u}: best-so-far image, {best.optimizer} seed {best.seed}")


def _layer_sections(doc: _Doc, traces: list[Trace], out: Path) -> None:
    """For every layer with enough units: a grid of each unit's best stimulus and a per-unit table."""
    for key, lunits in _layer_groups(traces).items():
        doc.h(2, f"Layer {key}: every unit")
        g = plot_layer_grid(traces, lunits, f"{key}: best stimulus of every unit", out / f"layer_{slug(key)}.png")
        if g is not None:
            doc.img(g, f"{key}: best stimulus per unit")
        lrows = []
        for u in lunits:
            ts = [t for t in traces if t.unit == u]
            b = _best_trace(ts)
            first = int(b.queries[int(np.argmax(b.values >= b.best))])
            lrows.append([u, f"{_fmt(b.best)}", b.optimizer, str(b.seed), str(first),
                          _fmt(float(np.median([t.best for t in ts])))])
        doc.table(["unit", "best activation", "optimizer", "seed", "found at query", "median over runs"], lrows)


def _runs_section(doc: _Doc, traces: list[Trace], out: Path, run_dir: Path,
                  skipped: list[SkippedRun] | None = None) -> None:
    """A table of every reported run with a link to its folder (relative to the report), and of the runs
    left out as damaged (``skipped``)."""
    doc.h(2, "Runs")
    doc.p("Every run in this report, with a link to its folder (journal, result.json, history.npz, best.png). "
          "*running*: the run had not finished when the report was written; its row shows its results so far. "
          "*interrupted*, *failed*, *stopped early*: the run ended short of its budget; its row shows what it "
          "reached (queries: reached / budget).")

    def link(folder: Path) -> str:
        rel = Path(os.path.relpath(folder.resolve(), out.resolve())).as_posix()
        label = Path(os.path.relpath(folder.resolve(), run_dir.resolve())).as_posix()
        return f"[{folder.resolve().name if label == '.' else label}]({rel})"

    rows = []
    for t in traces:
        n = t.n_queries if t.reached is None else t.reached
        name = t.extra.get("reported_name", "value")
        status = str(t.extra.get("status", FINISHED))
        if t.partial and status == FINISHED:
            status = _partial_label(t)
        rows.append([link(Path(t.extra["folder"])), t.unit, t.optimizer, str(t.seed), status,
                     _fmt(t.best) + ("" if name == "value" else f" ({name})"),
                     _fmt(t.extra.get("best_score", t.best)),
                     f"{n} / {t.budget if t.budget is not None else '-'}"])
    doc.table(["folder", "unit", "optimizer", "seed", "status", "best", "best search score", "queries"], rows)
    if skipped:
        doc.h(3, "Skipped runs")
        doc.p(f"{len(skipped)} run{'s' * (len(skipped) != 1)} left out of every table and picture: "
              "a file in the folder is damaged (unreadable, truncated or malformed).")
        doc.table(["folder", "unit", "optimizer", "file", "what is wrong"],
                  [[link(k.folder), k.unit or "-", k.optimizer or "-", k.file.name, k.problem.replace("|", "/")]
                   for k in skipped])


def _config_section(doc: _Doc, manifest: dict[str, Any]) -> None:
    """The config the runs were made with (the compare/scan config, or the single run's), as JSON."""
    cfg = manifest.get("config")
    if cfg is None and manifest.get("single") and manifest.get("runs"):
        cfg = manifest["runs"][0].get("config")
    if cfg is None:
        return
    doc.h(2, "Config")
    doc.p("The configuration the runs were made with" + (" (the compare or scan config; each run's own config "
          "is in its folder's `run.json`)." if not manifest.get("single") else " (the run's `run.json`)."))
    doc.code(json.dumps(cfg, indent=2, default=str), "json")


def write_report(run_dir: str | Path, out: str | Path | None = None, html_page: bool = True,
                 gifs: bool = True, title: str | None = None, command: str | None = None) -> list[Path]:
    """Write ``report.md`` (and ``report.html``) with plots into ``out`` (default ``RUN_DIR/report``).

    Reads the run folders only (never writes into them). Returns the paths of the
    Markdown and HTML files.

    Damaged runs are left out (see :func:`load_traces`); the report counts and lists them.

    Raises:
        ConfigError: no run with usable results under ``run_dir`` (the message names what is missing or
            damaged).
    """
    run_dir = Path(run_dir)
    manifest, traces = load_traces(run_dir)
    skipped, missing = manifest.get("skipped") or [], int(manifest.get("missing") or 0)
    if not traces and skipped:
        more = f"; and {len(skipped) - 1} more damaged run{'s' * (len(skipped) > 2)}" if len(skipped) > 1 else ""
        yet = f"; {missing} without results yet" if missing else ""
        raise ConfigError(f"no run under {run_dir} has usable results: {skipped[0]}{more}{yet}")
    if not traces:
        raise ConfigError(f"no run under {run_dir} has results yet (no result.json); run `mango compare` "
                          "(or `mango scan`, `mango run --out`) first, or wait for a running run's first improvement")
    out = check_out_dir(Path(out) if out is not None else run_dir / "report")   # one line for a file, /proc/x
    _remove_stale_pictures(out)
    budget = _count(manifest.get("budget")) or max(t.budget or t.n_queries for t in traces)
    budgets, dropped = report_budgets(manifest.get("budgets"), budget)
    stats, coverage = summarize_reached(traces, budgets, budget)
    for skip in skipped:
        if (skip.unit, skip.optimizer) in coverage:
            coverage[(skip.unit, skip.optimizer)].skipped += 1
    units = list(dict.fromkeys(t.unit for t in traces))
    title = title or f"MANGO comparison: {manifest.get('name', run_dir.name)}"

    doc = _Doc([])
    doc.h(1, title)
    own = sorted({t.budget for t in traces if t.budget})
    per_run = (f"budget {budget} queries per run" if len(own) <= 1 else
               f"**budgets that differ between runs** ({', '.join(map(str, own))} queries): a run shows *not reached* "
               f"at a budget above its own, and the win rates and bold winners compare runs of different budgets, so "
               f"read them at the budgets every run had")
    n_o, n_s = len(set(t.optimizer for t in traces)), len(set(t.seed for t in traces))
    doc.p(f"{_run_counts(traces, manifest)}. {len(units)} unit{'s' * (len(units) != 1)} x "
          f"{n_o} optimizer{'s' * (n_o != 1)} x {n_s} seed{'s' * (n_s != 1)}, "
          f"{per_run}." + (f" Command: `{command}`." if command else ""))
    note = (f"Budgets above the runs' budget of {budget} queries are left out of the table "
            f"({', '.join(map(str, dropped))}): no run went that far." if dropped else "")
    _summary_section(doc, stats, budgets, coverage, note)
    _win_section(doc, traces)
    _picture_sections(doc, traces, units, out, budget, gifs)
    _layer_sections(doc, traces, out)
    _runs_section(doc, traces, out, run_dir, skipped)
    _config_section(doc, manifest)

    md = out / "report.md"
    md.write_text(doc.markdown())
    paths = [md]
    if html_page:
        page = out / "report.html"
        page.write_text(doc.html(title))
        paths.append(page)
    (out / "summary.json").write_text(json.dumps(_strict(
        [{"unit": s.unit, "optimizer": s.optimizer, "seeds": s.seeds,
          "best_at": {str(b): list(v) for b, v in s.best_at.items()}, "q50": s.q50, "q90": s.q90,
          "auc": s.auc, "seconds": s.seconds, "optimizer_share": s.optimizer_share, "best": s.best,
          "batch_size": s.batch_size, "partial": coverage[(s.unit, s.optimizer)].partial,
          "seeds_at": coverage[(s.unit, s.optimizer)].at}
         for s in stats]), indent=1, default=float, allow_nan=False))
    return paths


def cmd_report(args: argparse.Namespace) -> int:
    """``mango report RUN_DIR``."""
    paths = write_report(args.run_dir, out=args.out, html_page=not args.no_html, gifs=not args.no_gif,
                         title=args.title, command=args.command_line)
    print("\n".join(str(p) for p in paths))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango report``."""
    p.add_argument("run_dir", help="a compare or scan output folder (or a single run folder)")
    p.add_argument("--out", help="report folder (default RUN_DIR/report)")
    p.add_argument("--title", help="report title")
    p.add_argument("--command-line", help="the command that made the runs (quoted in the report)")
    p.add_argument("--no-html", action="store_true", help="write only the Markdown and the pictures")
    p.add_argument("--no-gif", action="store_true", help="skip the search-progress GIFs")
    p.set_defaults(func=cmd_report)


# -- the summary printed at the end of `mango run` -------------------------------------------------
def random_search_baseline(values: np.ndarray, times: np.ndarray, budget: int) -> tuple[float, int] | None:
    """Expected best of ``budget`` uniformly random queries, estimated from a run's first batch.

    The first batch's ``k`` values are taken as a sample of the random-query distribution; the
    expected maximum of ``budget`` draws from that empirical distribution is
    ``sum_i v_(i) * ((i/k)^B - ((i-1)/k)^B)`` over the sorted values ``v_(1..k)``. It is a fair
    estimate only when the optimizer's first batch is uniform (random search, PROTES and the
    evolutionary methods start near-uniform; gradient AM does not). ``None`` with fewer than 2 values
    in the first batch.

    Returns:
        ``(estimate, k)``.
    """
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if len(values) < 2:
        return None
    k = int(np.sum(times == times[0])) if len(times) == len(values) else len(values)
    if k < 2:
        return None
    v = np.sort(values[:k])
    i = np.arange(1, k + 1, dtype=np.float64)
    w = (i / k) ** budget - ((i - 1) / k) ** budget
    return float(np.dot(v, w)), k


def _target_label(cfg: dict[str, Any]) -> str:
    t = cfg.get("target")
    if not isinstance(t, dict):
        return "-"
    if t.get("objective"):   # a model target: what is maximized is its objective (a unit or an expression)
        return f"objective {t['objective']}"
    parts = [f"layer {t['layer']}" if t.get("layer") is not None else "layer: the target's default (its output)",
             f"unit {t['unit']}" if t.get("unit") is not None else "unit: the target's default"]
    if t.get("position") is not None:
        parts.append(f"position {t['position']}")
    if t.get("readout") is not None:
        parts.append(f"readout {t['readout']}")
    return ", ".join(parts)


def run_hints(cfg: dict[str, Any], best_value: float, reported_name: str = "value",
              best_reported: float | None = None) -> list[str]:
    """Plain-language notes on a spiking unit that never fired or is saturated (rate at its maximum of 1);
    none for an objective expression that is not one unit's rate (``mem(...)``, weighted sums).

    A target counts as spiking when its table names a ``readout`` or its name mentions ``snn``/``spiking``;
    its readout is the table's ``readout`` (default ``"graded"``, the spiking targets' default). The rate
    is the reported value when the target reports one named ``"rate"``, else the score itself (``rate``
    readouts in [0, 1]; ``count`` readouts saturate at ``T``).
    """
    t = cfg.get("target") if isinstance(cfg.get("target"), dict) else {}
    name = str(t.get("name", ""))
    spiking = reported_name == "rate" or "readout" in t or "snn" in name or "spiking" in name
    if not spiking or (t.get("objective") and reported_name != "rate"):
        return []   # an objective expression (a membrane, a difference of rates) is not a rate in [0, 1]
    readout = str(t.get("readout", "graded"))
    graded = readout == "graded" and not t.get("tie_break")
    top = float(t.get("T", 0) or 0) if readout == "count" else 1.0
    rate = best_reported if reported_name == "rate" and best_reported is not None else best_value
    hints = []
    if rate <= 0:
        if graded:
            hints.append("the unit never fired (best rate 0); the best value is the graded readout's sub-threshold "
                         "score (less than one spike's worth: how close the membrane came to threshold). A silent "
                         "unit that can fire often fires late: try a larger --budget and other --seed values; some "
                         "units cannot be driven by this generator's images at all (a generator closer to what "
                         "the net was trained on may reach them)")
        elif t.get("tie_break"):
            hints.append("the unit never fired (best rate 0). tie_break is deprecated (its membrane term can "
                         "outrank a spike): drop it to use the graded readout, the default for spiking targets, "
                         "which ranks silent images by how close the membrane came to threshold, and try a larger "
                         "--budget")
        else:
            hints.append(f"the unit never fired (best rate 0) and the {readout} readout is flat where a unit is "
                         "silent, so the search saw no slope. Use the graded readout (--target-param "
                         "readout=graded, the default for spiking targets), which ranks silent "
                         "images by how close the membrane came to threshold, and a larger --budget")
    elif top and rate >= top - 1e-9:
        rank = ("the graded readout ranks the tied images by how early the unit fired and how high "
                "its membrane stayed" if graded else
                "the graded readout (--target-param readout=graded, the default) ranks the tied images")
        hints.append(f"the unit is saturated: its {'rate' if readout == 'graded' else readout} is at its maximum "
                     f"of {top:g}, so many images tie at the top; {rank}. Compare units with `mango scan` to find "
                     "one with room to grow")
    return hints


def _uniform_first_batch(optimizer: Any) -> bool:
    """Whether the optimizer registered as ``optimizer`` asks uniform random codes first (False when unknown)."""
    if not isinstance(optimizer, str):
        return False
    try:
        return bool(getattr(registry.get("optimizer", optimizer), "uniform_first_batch", False))
    except Exception:  # noqa: BLE001 - an optimizer no longer installed: no estimate, the summary still prints
        return False


def run_summary_rows(result: Any, out: str | Path | None = None) -> list[tuple[str, Any]]:
    """The ``(label, value)`` rows ``mango run`` prints at the end (see :func:`mango.clitools.print_rows`).

    ``result``: a :class:`mango.results.Result` (its ``config`` is the run's config dict). Rows: objective,
    layer/unit, optimizer, seed, queries, best value (and the reported rate), the query at which the best
    was reached, the random-search baseline estimated from the first batch, time, run folder, and hints
    for a unit that never fired or is saturated.
    """
    cfg = dict(result.config or {})
    prob = cfg.get("problem")
    gen, tgt = cfg.get("generator"), cfg.get("target")
    name = (lambda c: c.get("name") if isinstance(c, dict) else c)
    what = name(prob) if prob else f"{name(gen)} -> {name(tgt)}"
    rows: list[tuple[str, Any]] = [("objective", what)]
    if not prob:
        rows.append(("unit", _target_label(cfg)))
    rows += [("optimizer", name(cfg.get("optimizer"))), ("seed", cfg.get("seed", 0)),
             ("queries", result.n_queries)]
    best = f"{result.best_value:.6g}"
    if result.reported_name != "value" and result.best_reported is not None:
        best += f" ({result.reported_name} {result.best_reported:.4g})"
    rows.append(("best value", best))
    values = np.asarray(result.values, dtype=np.float64)
    if len(values):
        q = result.best_query          # None: no value reaches the recommended best (noisy): the top value's query
        q = int(result.query_index[int(np.argmax(values))]) if q is None else q
        rows.append(("best found at query", f"{q} of {result.n_queries}"))
    opt = name(cfg.get("optimizer"))
    uniform = _uniform_first_batch(opt)
    base = (None if result.n_external or not uniform
            else random_search_baseline(values, result.times, result.n_queries))
    if base is None:
        why = ("no uniform first batch to estimate it from" if uniform or opt is None else
               f"{opt}'s first batch is not uniform random draws; run --optimizer random for the baseline")
        rows.append(("random search (est.)", f"n/a ({why})"))
    else:
        rows.append(("random search (est.)", f"{base[0]:.6g}: expected best of {result.n_queries} draws from the "
                     f"first batch's {base[1]} values (a low estimate: real random search can beat the first batch)"))
    rows.append(("seconds", f"{result.seconds:.2f} (optimizer {result.optimizer_seconds:.2f})"))
    if out is not None:
        rows.append(("run folder", str(out)))
    near = getattr(result, "approach", None)
    if near and not near.get("spikes"):
        rows.append(("closest approach", approach_text(near)))
    for h in run_hints(cfg, result.best_value, result.reported_name, result.best_reported):
        rows.append(("note", h))
    return rows


def approach_text(near: dict[str, Any]) -> str:
    """One line on how close a silent unit came to firing, from :attr:`mango.results.Result.approach`, e.g.
    ``"membrane peaked at 0.61 in the second half of T (threshold 1: 61 % of it), at position [0, 4] of the
    5 x 5 map"``; a peak below 0 is said to stay below the resting level (0) all along."""
    frac = near.get("peak_over_threshold")
    peak, thr = float(near.get("late_peak", float("nan"))), near.get("threshold")
    text = f"membrane peaked at {peak:.3g} in the second half of T (threshold {thr:.3g}"
    if peak < 0:
        text += "; it stayed below the resting level 0: inhibited)"
    elif frac is not None:
        text += f": {frac:.0%} of it)"
    else:
        text += ")"
    if near.get("position") is not None:
        shape = " x ".join(str(v) for v in near.get("map") or [])
        text += f", at position {near['position']} of the {shape} map"
    return text
