"""`mango report`: the files, table rows, images and GIFs a report must contain."""
from __future__ import annotations

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


def test_gif_frames_follow_the_journal(cmp_dir):
    _, traces = load_traces(cmp_dir)
    t = traces[0]
    codes, queries, values = gif_frames(t.extra["folder"])
    bsf = np.maximum.accumulate(t.values)
    n_improve = 1 + int(np.sum(np.diff(bsf) > 0))
    assert len(codes) == len(values) == min(n_improve, 30)
    assert values[-1] == t.best and queries == sorted(queries)
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
