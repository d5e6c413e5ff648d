"""The studio page in a real browser: Debian's chromium driven by playwright, against the
app on a free loopback port. Adds three views, removes one, renders a target, checks the
cache panel and the rendered image against the runtime's own render, switches the backend
and renders again, and saves a screenshot. Skips with the reason where chromium or
playwright is absent."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import viewrt.runtime as vrt
from helpers.studio import make_studio
from viewrt.runtime import backends as registry
from viewrt.studio import browser
from viewrt.studio.server import Background

ROUND = 0.5 / 255 + 1e-5  # a PNG's 8-bit rounding, plus float noise

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def _page_image(page, selector: str) -> np.ndarray:
    src = page.get_attribute(selector, "src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


def _reference(export, scene, frames, target, backend):
    frame = np.stack([c.c2w for c in scene.cameras])
    with vrt.open(export, backend=backend, frame=frame, threads=1) as r:
        for f in frames:
            r.add_view(scene.images[f], scene.cameras[f])
        return np.clip(r.render([scene.cameras[target]])[0], 0, 1)


def test_page_in_chromium(tiny_export, tmp_path):
    from playwright.sync_api import sync_playwright

    export = tiny_export[0]
    studio = make_studio(export, synthetic=1)
    scene = studio.catalogue.load(next(iter(studio.catalogue.entries)))
    with Background(studio) as bg, sync_playwright() as p:
        assert bg.url.startswith("http://127.0.0.1:")
        b = p.chromium.launch(executable_path=browser.executable(), args=browser.ARGS)
        try:
            page = b.new_page(viewport=browser.VIEWPORT)
            browser.tour(page, bg.url, add=(0, 3, 6), remove=3, target=7)
            assert browser.error_line(page) == ""
            # the cache panel says what the server holds
            sid = page.evaluate("sid")
            state = studio.state(sid)
            assert sorted(v["frame"] for v in state["views"]) == [0, 6]
            summary = page.inner_text("#cache-summary")
            assert summary.startswith("slots 2 / 8 in use, pinned 0"), summary
            rows = page.locator("#slots tbody tr")
            assert rows.count() == 2
            frames = [int(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(2)]
            assert frames == [v["frame"] for v in state["views"]]
            cached = page.locator("#frames .thumb.cached")
            assert sorted(int(cached.nth(i).get_attribute("data-frame")) for i in range(2)) == [
                0,
                6,
            ]
            assert "evicts nothing" in page.inner_text("#next-evicts")
            assert "ort on cpu, precision fp32" in page.inner_text("#precision")
            # the rendered image is the runtime's own render of the same views
            ref = _reference(export, scene, [0, 6], 7, "ort")
            np.testing.assert_allclose(_page_image(page, "#render-image"), ref, atol=ROUND, rtol=0)
            np.testing.assert_allclose(
                _page_image(page, "#truth-image"), scene.images[7], atol=ROUND, rtol=0
            )
            assert page.inner_text("#psnr").startswith("PSNR ")
            assert "render" in page.inner_text("#last-timing")
            # an error is one line on the page, and the state stays the server's
            page.click("#frames .thumb[data-frame='0']")  # removes view of frame 0
            browser.settle(page)
            page.fill("#window", "9")
            page.click("#apply")
            browser.settle(page)
            err = browser.error_line(page)
            assert (
                "exceeds the cache capacity" in err and "\n" not in err and "Traceback" not in err
            )
            assert (
                page.locator("#slots tbody tr").count() == 1
                and len(studio.state(sid)["views"]) == 1
            )
            browser.click_frame(page, 0)  # add it back
            assert browser.error_line(page) == ""
            if registry.missing("openvino-f32") is None:
                browser.switch_backend(page, "openvino-f32")
                assert browser.error_line(page) == ""
                assert "openvino on cpu" in page.inner_text("#precision")
                assert page.locator("#slots tbody tr").count() == 2
                browser.render_frame(page, 7)
                ref = _reference(export, scene, [6, 0], 7, "openvino-f32")
                got = _page_image(page, "#render-image")
                np.testing.assert_allclose(got, ref, atol=ROUND, rtol=0)
            shot = tmp_path / "studio.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            b.close()
