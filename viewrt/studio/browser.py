"""Driving the studio page in a headless chromium with playwright, for the browser test
(tests/studio/test_studio_browser.py) and the README's screenshot (``viewrt studio EXPORT
--screenshot docs/studio.png``).

It uses the system's chromium (Debian: ``apt-get install chromium``), never a downloaded
browser. Imports playwright (the ``dev`` extra) inside the functions that launch it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from viewrt.errors import ViewrtError

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1180, "height": 760}


def missing() -> str | None:
    """Why the page cannot be driven here (no chromium, no playwright), or None."""
    if importlib.util.find_spec("playwright") is None:
        return 'playwright is not installed (pip install ".[dev]")'
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        return f"chromium is not installed ({CHROMIUM}; Debian: apt-get install chromium)"
    return None


def executable() -> str:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def settle(page) -> None:
    """Wait until the page's last action is drawn (it sets body[data-busy] meanwhile)."""
    page.wait_for_function("!document.body.dataset.busy")


def open_page(page, url: str) -> None:
    """Load the studio and wait for its session."""
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === '1'")
    settle(page)


def click_frame(page, frame: int) -> None:
    """Click a frame's thumbnail: adds it, or removes it when it is a cached view."""
    page.click(f"#frames .thumb[data-frame='{frame}']")
    settle(page)


def render_frame(page, frame: int) -> None:
    page.check("input[name=mode][value=frame]")
    page.select_option("#target-frame", str(frame))
    page.click("#render")
    settle(page)


def switch_backend(page, backend: str) -> None:
    page.select_option("#backend", backend)
    settle(page)


def error_line(page) -> str:
    """The page's error line ('' when none is shown)."""
    el = page.locator("#error")
    return "" if el.get_attribute("hidden") is not None else el.inner_text()


def tour(page, url: str, add=(0, 3, 6), remove=3, target=7) -> None:
    """What the test and the screenshot do: add views, remove one, render a target."""
    open_page(page, url)
    for f in add:
        click_frame(page, f)
    click_frame(page, remove)
    render_frame(page, target)


def screenshot(url: str, out: Path) -> Path:
    """Load the studio at ``url``, do :func:`tour`, pin a view, save a PNG screenshot.

    Raises: ViewrtError when chromium or playwright is missing or the page shows an error.
    """
    why = missing()
    if why is not None:
        raise ViewrtError(f"--screenshot: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable(), args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            tour(page, url)
            page.click("#slots tbody tr:first-child button.pin")
            settle(page)
            render_frame(page, 7)
            err = error_line(page)
            if err:
                raise ViewrtError(f"--screenshot: the page shows an error: {err}")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return Path(out)
