"""The live view in a real browser: headless Chromium (Debian's package) driven by Playwright's Python API.

A real run (``mango run`` in a subprocess) starts after the page is open; the test sees the best value
and the best-so-far curve appear, sees the curve advance while the run progresses (pushed by
server-sent events, no reload), and sees the best image once the run has written ``best.png``.

Needs ``pip install playwright`` and ``apt-get install -y chromium`` (Playwright's own browser download
is not used). Set ``MANGO_CHROMIUM`` to use another Chromium binary, and ``MANGO_WATCH_SCREENSHOT`` to a
path to keep the screenshot (the README's ``docs/watch.png`` is made that way).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MANGO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUDGET = 1000
_IMAGE_SHOWN = ("(() => { const i = document.getElementById('best-image');"
                " return !i.classList.contains('hidden') && i.complete && i.naturalWidth > 0; })()")


def _need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set MANGO_CHROMIUM)")


@pytest.mark.slow
def test_live_page_follows_a_real_run(tmp_path):
    _need_browser()
    pytest.importorskip("starlette")
    from playwright.sync_api import sync_playwright

    from mango.watch import serve, stop

    out = tmp_path / "run"
    url = serve(out)
    cmd = [sys.executable, "-m", "mango.cli", "run", "--generator", "vqvae-digits", "--target", "snn-digits",
           "--target-param", "layer=spiking_out", "--target-param", "unit=3", "--optimizer", "protes",
           "--budget", str(BUDGET), "--batch-size", "20", "--out", str(out), "-q"]
    proc = None
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=30_000)
            assert page.inner_text("#kind") == "missing"  # the folder does not exist yet

            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # the curve and the best value appear ...
            page.wait_for_function("Number(document.getElementById('curve').dataset.lastX) > 0", timeout=240_000)
            first_x = float(page.get_attribute("#curve", "data-last-x"))
            first_points = int(page.get_attribute("#curve", "data-points"))
            assert 0 < first_x < BUDGET, "the run ended before the page saw it start; raise BUDGET"
            assert page.inner_text("#best-value") not in ("", "–")
            assert page.locator("#curve polyline.best-curve").count() == 1
            assert page.inner_text("#status") == "running"
            # ... and advance while the run goes on (no reload: pushed by server-sent events)
            page.wait_for_function(f"Number(document.getElementById('curve').dataset.lastX) > {first_x}",
                                   timeout=120_000)
            later_x = float(page.get_attribute("#curve", "data-last-x"))
            assert later_x > first_x and int(page.get_attribute("#curve", "data-points")) >= first_points
            assert page.locator("#curve polyline.baseline").count() == 1  # random-search baseline drawn
            # the best image while the run goes on (best.png, or drawn from the journal's best code)
            page.wait_for_function(_IMAGE_SHOWN, timeout=60_000)
            page.wait_for_function(f"Number(document.getElementById('curve').dataset.lastX) >= {BUDGET * 0.4}",
                                   timeout=240_000)  # a screenshot with some of the run behind it
            page.wait_for_function(_IMAGE_SHOWN, timeout=30_000)
            assert page.is_hidden("#no-image")
            shot = tmp_path / "watch.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            rc = proc.wait(timeout=600)
            assert rc == 0, proc.stdout.read()
            # after the run: finished, the whole budget on the curve, the best image shown
            page.wait_for_function("document.getElementById('status').textContent === 'finished'", timeout=30_000)
            page.wait_for_function(f"Number(document.getElementById('curve').dataset.lastX) === {BUDGET}",
                                   timeout=30_000)
            page.wait_for_function(_IMAGE_SHOWN, timeout=30_000)
            assert page.is_hidden("#no-image")
            keep = os.environ.get("MANGO_WATCH_SCREENSHOT")
            if keep:
                Path(keep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, keep)
            browser.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        stop(url)
    assert not errors, errors


def test_page_says_how_close_a_silent_unit_came(tmp_path):
    """A finished run of a unit that never fired: the page shows result.json's closest approach in words."""
    _need_browser()
    pytest.importorskip("starlette")
    from playwright.sync_api import sync_playwright

    from mango.cli import main
    from mango.watch import serve, stop

    out = tmp_path / "run"          # spiking2[0] of the digits SNN stays silent for 20 random queries
    assert main(["run", "--generator", "vqvae-digits", "--target", "snn-digits", "--target-param", "layer=spiking2",
                 "--target-param", "unit=0", "--optimizer", "random", "--budget", "20", "--out", str(out), "-q"]) == 0
    import json
    near = json.loads((out / "result.json").read_text())["approach"]
    assert near["spikes"] == 0
    url = serve(out)
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent === 'finished'", timeout=30_000)
            text = page.inner_text("#approach")
            browser.close()
    finally:
        stop(url)
    assert not errors, errors
    peak = float(f"{near['late_peak']:.3g}")
    assert text.startswith("never fired; closest approach: membrane peaked at ")
    assert float(text.split("peaked at ")[1].split(" ")[0]) == pytest.approx(peak)
    assert f"(threshold {near['threshold']:g})" in text
