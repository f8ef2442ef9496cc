"""The catalog browser in a real browser: headless Chromium drives ``intake-clms gui`` against the sandbox.

Selects an entry, edits the request, presses plot, and checks from the DOM (a bokeh canvas, the
time slider, the success message) and from the screenshot's pixels (not blank, a coloured image
area) that a plot rendered.  Skipped only where Chromium is absent and this is not CI: under
``CI=true`` a missing Chromium fails (``.ci/run`` installs it).  Set ``INTAKE_CLMS_SCREENSHOTS``
to a folder to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from intake_clms.sandbox import Sandbox

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NDVI = "ndvi_global_300m_10daily_v2"
TIMEOUT_MS = 180_000  # the first plot orders, downloads and assembles through the sandbox


def _need(what: str, present: bool) -> None:
    if present:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing on CI: .ci/run must install it")
    pytest.skip(f"{what} is not installed (apt-get install -y chromium; pip install -e '.[test]'); required under CI")


@pytest.fixture
def browser():
    _need("chromium (Debian package)", CHROMIUM is not None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright (Python package)", False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def gui_url(sandbox_factory, tmp_path: Path):
    """``intake-clms gui --port 0`` on the sandbox (WEkEO credentials from ``sandbox.env()``): its URL."""
    sb: Sandbox = sandbox_factory(size="small")
    env = dict(os.environ, **sb.env(), INTAKE_CLMS_CACHE=str(tmp_path / "cache"), HDA_RC=str(tmp_path / "no-hdarc"))
    script = Path(sys.executable).with_name("intake-clms")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "intake_clms.cli"]
    proc = subprocess.Popen([*cmd, "gui", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        assert m, f"intake-clms gui printed no URL: {line!r}"
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0 and "Traceback" not in err, err


def _pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _keep(png: bytes, name: str) -> None:
    folder = os.environ.get("INTAKE_CLMS_SCREENSHOTS")
    if folder:
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB")
        image = image.quantize(colors=128, dither=Image.Dither.NONE)
        image.save(Path(folder) / name, optimize=True)


def test_select_an_entry_press_plot_and_see_the_image(browser, gui_url: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    page.goto(gui_url)
    sources = page.locator(f"select:has(option[value='{NDVI}'])")
    sources.wait_for(timeout=TIMEOUT_MS)
    sources.select_option(NDVI)
    page.locator(".ace_content", has_text=NDVI).wait_for(timeout=TIMEOUT_MS)  # the source panel (code editor)
    for index, value in enumerate(("6, 46, 9, 49", "2024-01-01", "2024-01-31")):  # bbox, start, end (sandbox data)
        field = page.locator("input.bk-input").nth(index)
        field.fill(value)
        field.press("Enter")
    page.locator(".ace_content", has_text="2024-01-31").wait_for(timeout=TIMEOUT_MS)
    _keep(page.screenshot(), "gui-catalog.png")

    page.get_by_role("button", name="Plot").click()
    page.get_by_text("Read bbox [6, 46, 9, 49], 2024-01-01 to 2024-01-31").wait_for(timeout=TIMEOUT_MS)
    canvas = page.locator(".bk-Canvas canvas").first
    canvas.wait_for(timeout=TIMEOUT_MS)
    slider = page.locator(".noUi-target").first  # the time slider (groupby: time) under the plot
    slider.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)  # let the canvas paint

    # The DOM: a bokeh plot with its canvas and time slider, and no request left this machine's GUI server.
    assert page.locator(".bk-Canvas").count() >= 1
    assert slider.bounding_box()["y"] > canvas.bounding_box()["y"]
    assert hosts == {gui_url.split("/")[2]}

    # The pixels: the page is not blank, and the plot's canvas holds a coloured image (RdYlGn).
    full = _pixels(page.screenshot(full_page=True))
    assert len({tuple(p) for p in full[::7, ::7].reshape(-1, 3)}) > 50
    box = canvas.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 150
    plot = _pixels(page.screenshot(clip=box))
    saturation = plot.max(axis=2) - plot.min(axis=2)
    coloured = saturation > 60
    assert coloured.mean() > 0.25, f"only {coloured.mean():.0%} of the plot area is coloured"
    greens = (plot[..., 1] > plot[..., 0] + 30) & coloured
    reds = (plot[..., 0] > plot[..., 1] + 30) & coloured
    assert greens.any() or reds.any()
    # A pattern, not a flat square: decoded NDVI (0..1) on the 0..1 colour limits spreads over the colour map
    # (raw counts 0..250 on those limits painted one dark green).
    shades = {tuple(c) for c in plot[coloured].reshape(-1, 3)}
    assert len(shades) > 40, f"the NDVI plot has {len(shades)} distinct colours: a flat image"
    assert plot[coloured].std(axis=0).max() > 15
    _keep(page.screenshot(full_page=True), "gui-plot.png")
