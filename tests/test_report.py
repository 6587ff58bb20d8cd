"""`mango report`: the files, table rows, images and GIFs a report must contain."""
from __future__ import annotations

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest

from mango.cli import main
from mango.compare import run_compare
from mango.report import gif_frames, load_traces, write_report

UNITS = [0, 1, 2, 3]
OPTS = ["random", "discrete-one-plus-one"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def cmp_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "cmp"
    cfg = {"name": "tiny-digits", "budget": 40, "seeds": SEEDS, "batch_size": 10, "workers": 1,
           "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking_out", "units": UNITS, "T": 4}],
           "optimizers": [{"name": o} for o in OPTS]}
    status = run_compare(cfg, out, workers=1)
    assert not status["errors"]
    return out


def test_report_files_and_content(cmp_dir):
    md_path, html_path = write_report(cmp_dir, command="mango compare tiny.toml")
    rep = md_path.parent
    md = md_path.read_text()
    # summary table: one row per (unit, optimizer)
    rows = [ln for ln in md.splitlines() if re.match(r"\| snn-digits-spiking_out\[\d\] \| ", ln)]
    summary_rows = [r for r in rows if r.split("|")[2].strip() in OPTS]
    assert len(summary_rows) == len(UNITS) * len(OPTS)
    assert "best @ 40 (median [IQR])" in md and "queries to 90 %" in md and "AUC" in md
    assert "mango compare tiny.toml" in md
    # win-rate table: one row per optimizer
    assert sum(1 for ln in md.splitlines() if re.match(rf"\| ({'|'.join(OPTS)}) \| (-|\d)", ln)) == len(OPTS)
    # pictures: a convergence plot per unit, the stimulus grid, a GIF per unit, the layer grid
    imgs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sum(i.startswith("convergence_") for i in imgs) == len(UNITS)
    assert sum(i.endswith(".gif") for i in imgs) == len(UNITS)
    assert "best_stimuli.png" in imgs and any(i.startswith("layer_") for i in imgs)
    assert len(imgs) == 2 * len(UNITS) + 2
    for i in imgs:
        assert (rep / i).stat().st_size > 500
    # per-unit table of the layer grid
    assert "found at query" in md
    # HTML: self-contained, every image embedded
    html = html_path.read_text()
    assert html.count("<img ") == len(imgs) and "data:image/gif;base64," in html
    assert not re.search(r'src="(?!data:)', html)
    assert html.count("<tr>") >= len(UNITS) * len(OPTS) + 1
    # summary.json is strict JSON (a level never reached was written as Infinity)
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    summary = json.loads((rep / "summary.json").read_text(), parse_constant=refuse)
    assert len(summary) == len(UNITS) * len(OPTS)
    assert "units x 2 optimizers x 2 seeds" in md


def test_report_shows_the_firing_rate_not_the_search_score(cmp_dir):
    """A spiking unit's report values are its firing rates (history.npz's `reported`): the graded search score
    adds a sub-threshold tie term that would read as a rate (a silent unit's best showed as ~1e-5, not 0)."""
    _, traces = load_traces(cmp_dir)
    differ = 0
    for t in traces:
        h = np.load(t.extra["folder"] / "history.npz")
        assert t.extra["reported_name"] == "rate"
        np.testing.assert_array_equal(t.values, h["reported"])
        assert t.extra["best_score"] == h["values"].max()
        differ += not np.array_equal(h["values"], h["reported"])
    assert differ == len(traces)                       # the scores differ from the rates: the check can fail
    md = write_report(cmp_dir)[0].read_text()
    assert "| best | best search score |" in md
    run_rows = [ln for ln in md.splitlines() if ln.startswith("| [")]
    assert len(run_rows) == len(traces) and all(" (rate) | " in ln for ln in run_rows)
    assert "for a spiking unit its firing rate" in md


def test_gif_frames_follow_the_journal(cmp_dir):
    _, traces = load_traces(cmp_dir)
    t = traces[0]
    codes, queries, values = gif_frames(t.extra["folder"])
    score = np.load(t.extra["folder"] / "history.npz")["values"]     # the frames follow the search score
    bsf = np.maximum.accumulate(score)
    n_improve = 1 + int(np.sum(np.diff(bsf) > 0))
    assert len(codes) == len(values) == min(n_improve, 30)
    assert values[-1] == score.max() == t.extra["best_score"] and queries == sorted(queries)
    gif = cmp_dir / "report" / "progress_snn-digits-spiking_out-0.gif"
    if not gif.exists():
        write_report(cmp_dir)
    frames = iio.imread(gif, index=None)
    best0 = max((x for x in traces if x.unit == "snn-digits-spiking_out[0]"), key=lambda x: (x.best, -x.seed))
    assert frames.shape[0] == len(gif_frames(best0.extra["folder"])[0])


def test_cli_report_of_a_single_run(tmp_path, capsys):
    run = tmp_path / "one"
    assert main(["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8",
                 "--optimizer", "random", "--budget", "30", "--out", str(run), "-q"]) == 0
    assert main(["report", str(run), "--no-gif"]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "| separable | random | 1 |" in md and (run / "report" / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "neither a compare/scan folder" in capsys.readouterr().err


def test_gif_of_a_run_that_never_improved(tmp_path):
    # the constant problem never improves on its first query: one frame, still a valid GIF
    from mango.report import make_gif
    out = tmp_path / "flat"
    cfg = {"name": "flat", "budget": 20, "seeds": [0], "batch_size": 10, "workers": 1,
           "generators": [{"name": "vqvae-digits"}],
           "targets": [{"name": "snn-digits", "layer": "spiking2", "units": [0], "T": 1}],
           "optimizers": [{"name": "random"}]}
    assert not run_compare(cfg, out, workers=1)["errors"]
    _, traces = load_traces(out)
    (t,) = traces
    codes, _, _ = gif_frames(t.extra["folder"])
    assert len(codes) == 1, "unit spiking2[0] at T=1 is silent for these 20 images: a single-frame run"
    g = make_gif(t, tmp_path / "one.gif")
    assert g is not None and iio.imread(g, index=None).shape[0] == 1


def test_rewrite_keeps_the_users_pictures(cmp_dir, tmp_path):
    """A report written into a folder with other pictures deletes only its own stale ones."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"not a report picture")
    (out / "progress_old-unit.gif").write_bytes(b"stale")          # a picture an earlier report wrote
    write_report(cmp_dir, out=out)
    assert (out / "holiday.png").read_bytes() == b"not a report picture"
    assert not (out / "progress_old-unit.gif").exists()
    assert (out / "best_stimuli.png").exists()


# -- issue 14 item 7: the report's defects, each caught ------------------------------------------------
def _html_text(html: str) -> str:
    """The page's text outside <pre> blocks, <style> and embedded images."""
    html = re.sub(r"<pre>.*?</pre>|<style>.*?</style>|src=\"data:[^\"]*\"", "", html, flags=re.S)
    return html


def test_inline_markdown_becomes_html():
    from mango.report import inline_html

    out = inline_html("**bold [1, 2]** and *queries to 50/90 %*: `mango run` [runs/a](../runs/a) 2 * 3 < 4")
    assert "<b>bold [1, 2]</b>" in out and "<em>queries to 50/90 %</em>" in out
    assert "<code>mango run</code>" in out and '<a href="../runs/a">runs/a</a>' in out
    assert "2 * 3 &lt; 4" in out  # a lone asterisk is text, not emphasis


def test_report_html_has_no_markdown_markers_links_and_config(cmp_dir):
    md_path, html_path = write_report(cmp_dir, gifs=False)
    text = _html_text(html_path.read_text())
    assert "*" not in text and "`" not in text and "<em>" in text
    md = md_path.read_text()
    links = re.findall(r"\[[^\]]+\]\((\.\./runs/[^)]+)\)", md)
    assert len(links) == len(UNITS) * len(OPTS) * len(SEEDS)
    for rel in links:  # every link leads to its run folder from the report folder
        assert (md_path.parent / rel / "result.json").exists()
    assert "## Config" in md and '"spiking_out"' in md
    assert html_path.read_text().count('<a href="../runs/') == len(links)


def test_best_stimuli_title_is_not_clipped(cmp_dir, monkeypatch, tmp_path):
    """One method, one unit: the narrowest grid; the suptitle must lie inside the figure."""
    from matplotlib.figure import Figure

    from mango.report import plot_best_stimuli

    _, traces = load_traces(cmp_dir)
    checked = []
    real = Figure.savefig

    def savefig(fig, *a, **k):
        fig.canvas.draw()
        box = fig._suptitle.get_window_extent()
        W, H = fig.bbox.width, fig.bbox.height
        assert box.x0 >= 0 and box.x1 <= W and box.y1 <= H, (box, W, H)
        checked.append(fig._suptitle.get_text())
        return real(fig, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)
    one = [t for t in traces if t.optimizer == OPTS[0] and t.unit == traces[0].unit]
    assert plot_best_stimuli(one, tmp_path / "b.png") is not None
    assert "best stimulus per method" in checked[0].replace("\n", " ")


def _trace(unit, opt, seed, values):
    from mango.stats import Trace

    v = np.asarray(values, dtype=float)
    return Trace(unit=unit, optimizer=opt, seed=seed, queries=np.arange(1, len(v) + 1), values=v, budget=len(v))


def test_a_unit_that_never_responded_is_said_plainly():
    from mango.report import summary_table
    from mango.stats import summarize

    traces = [_trace("u", o, s, np.zeros(20)) for o in ("a", "b") for s in (0, 1)]
    header, rows = summary_table(summarize(traces, [20], 20), [20])
    i50, i90 = header.index("queries to 50 %"), header.index("queries to 90 %")
    for r in rows:
        assert r[i50] == r[i90] == "unit never responded"
        assert not any("**" in c for c in r)  # no best in bold when all stayed at 0


def test_half_the_seeds_reached_reads_plainly():
    from mango.report import summary_table
    from mango.stats import summarize

    reached = np.r_[np.zeros(9), np.ones(11)]  # reaches 1 at query 10
    traces = [_trace("u", "a", 0, reached), _trace("u", "a", 1, np.zeros(20))]
    header, rows = summary_table(summarize(traces, [20], 20), [20])
    cell = rows[0][header.index("queries to 50 %")]
    assert "never" not in cell and cell == "only 1 of 2 seeds reached it (median of those: 10)"


def test_a_median_between_two_query_counts_keeps_its_half():
    """Medians of 1 and 2 queries, and of 2 and 3, both showed as 2 (round() rounds halves to even)."""
    from mango.report import summary_table
    from mango.stats import summarize

    up = lambda q: np.r_[np.zeros(q - 1), np.ones(20 - q + 1)]          # reaches 1 at query q
    traces = [_trace("u", "a", 0, up(1)), _trace("u", "a", 1, up(2)), _trace("u", "b", 0, up(2)),
              _trace("u", "b", 1, up(3))]
    header, rows = summary_table(summarize(traces, [20], 20), [20])
    cells = {r[header.index("optimizer")]: r[header.index("queries to 50 %")] for r in rows}
    assert cells == {"a": "1.5", "b": "2.5"}, cells


def _result(config, values, reported_name="value", best_reported=None, external=0):
    from mango.results import Result

    v = np.asarray(values, dtype=float)
    return Result(best_code=np.zeros(4, dtype=np.int64), best_value=float(v.max()), values=v,
                  times=np.repeat(np.arange(len(v) // 10) + 1.0, 10), query_index=np.arange(1, len(v) + 1),
                  n_queries=len(v), seconds=1.0, optimizer_seconds=0.1, eval_seconds=0.8, config=config,
                  reported_name=reported_name, best_reported=best_reported, n_external=external)


SNN = {"generator": {"name": "vqvae-digits"}, "target": {"name": "snn-digits", "layer": "spiking1", "unit": 20},
       "optimizer": {"name": "protes"}, "seed": 0, "budget": 40}


def test_run_summary_names_unit_best_query_baseline_and_hints():
    from mango.report import run_summary_rows

    vals = np.r_[np.linspace(0.1, 0.2, 10), np.full(10, 0.2), [0.5], np.full(19, 0.3)]
    rows = dict(run_summary_rows(_result(SNN, vals), "runs/x"))
    assert rows["unit"] == "layer spiking1, unit 20"
    assert rows["best found at query"] == "21 of 40"
    # with an optimizer's own forward passes counted (query_index runs ahead of the value's index), the
    # summary and the result's one-line repr name the same query count
    ext = _result(SNN, vals)
    ext.query_index, ext.n_queries = ext.query_index * 3, 120
    assert dict(run_summary_rows(ext))["best found at query"] == "63 of 120" and " at query 63 of 120," in repr(ext)
    # protes's first batch is not uniform draws (nor ngopt's, ttopt's or elite's): no estimate from it, which
    # for ngopt was a tenth of what random search reached
    assert rows["random search (est.)"].startswith("n/a (protes's first batch is not uniform random draws")
    rand = dict(run_summary_rows(_result(dict(SNN, optimizer={"name": "random"}), vals)))
    est = float(rand["random search (est.)"].split(":")[0])  # 40 draws from the first batch: its max, nearly
    assert 0.19 < est <= 0.2
    assert "note" not in rows and rows["run folder"] == "runs/x"
    never = dict(run_summary_rows(_result(SNN, np.zeros(40))))
    # the default (graded) readout: the best value is a sub-threshold score; no deprecated tie_break advice
    assert "never fired" in never["note"] and "sub-threshold" in never["note"] and "--budget" in never["note"]
    assert "tie_break" not in never["note"]
    flat = dict(SNN, target=dict(SNN["target"], readout="rate"))
    never_flat = dict(run_summary_rows(_result(flat, np.zeros(40))))["note"]
    assert "flat" in never_flat and "readout=graded" in never_flat and "sub-threshold" not in never_flat
    tie = dict(SNN, target=dict(SNN["target"], tie_break=0.05))
    assert "drop it" in dict(run_summary_rows(_result(tie, np.zeros(40))))["note"]
    sat = dict(run_summary_rows(_result(SNN, np.r_[np.zeros(10), np.ones(30)])))
    assert "saturated" in sat["note"] and "mango scan" in sat["note"]
    grad = dict(run_summary_rows(_result(SNN, vals, external=5)))
    assert grad["random search (est.)"].startswith("n/a")
    prob = dict(run_summary_rows(_result({"problem": {"name": "separable"}, "optimizer": "random"}, vals)))
    assert "unit" not in prob and "note" not in prob


def test_report_of_a_demo_like_folder(tmp_path):
    """No compare.json, no result.json at the top: the run folders below are found and reported."""
    for opt in ("random", "discrete-one-plus-one"):
        assert main(["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8",
                     "--optimizer", opt, "--budget", "30", "--out", str(tmp_path / "unit a" / opt), "-q"]) == 0
    md = write_report(tmp_path, gifs=False)[0].read_text()
    assert "| separable | random | 1 |" in md and "| separable | discrete-one-plus-one | 1 |" in md
    assert "(../unit a/random)" in md


def test_a_report_over_runs_of_different_budgets_says_so(tmp_path):
    """A folder of single runs made with budgets 20 and 100 was reported as 'budget 100 queries per run'."""
    from mango.cli import main

    for opt, budget in (("elite", 20), ("random", 100)):
        assert main(["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8", "--budget",
                     str(budget), "--optimizer", opt, "-q", "--out", str(tmp_path / "mix" / f"b{budget}")]) == 0
    assert main(["report", str(tmp_path / "mix")]) == 0
    text = (tmp_path / "mix" / "report" / "report.md").read_text()
    assert "**budgets that differ between runs** (20, 100 queries)" in text
    assert "budget 100 queries per run" not in text
