"""The demo page in a real headless Chromium (the system's, driven by Playwright): it loads, an image is chosen,
the overlay and the segment list appear, hovering a segment highlights it; a screenshot is kept as an artefact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("EOMT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # ignored by git; CI keeps it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), (f"{CHROMIUM} is missing: install Chromium (apt-get install chromium, as "
                                      ".ci/run does) or point EOMT_CHROMIUM at one")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_the_demo_page_segments_an_uploaded_image(server, browser, images, tmp_path):
    import httpx

    page = browser.new_page(viewport={"width": 1280, "height": 820})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(f"{server.url}/")
    page.wait_for_function("document.getElementById('task').options.length === 3")
    assert "panoptic" in page.text_content("#model-info")
    assert page.eval_on_selector("#task", "select => select.value") == "panoptic"

    picture = tmp_path / "street.png"  # the page's own example: larger than the request-count tests' images
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "coffee.png", picture)
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#segments li")
    expected = httpx.post(f"{server.url}/v1/segment", content=picture.read_bytes(),
                          headers={"Content-Type": "image/png"}, timeout=60).json()
    items = page.locator("#segments li")
    assert items.count() == len(expected["segments"]) > 0
    assert [items.nth(i).locator(".label").text_content() for i in range(items.count())] == [
        s["label"] for s in expected["segments"]]
    assert f"{expected['segments'][0]['score']:.3f}" in items.nth(0).text_content()
    size = page.eval_on_selector("#overlay", "c => [c.width, c.height]")
    assert size == [expected["width"], expected["height"]]
    changed = page.evaluate("""() => {
        const canvas = document.getElementById('overlay');
        const plain = new OffscreenCanvas(canvas.width, canvas.height).getContext('2d');
        plain.drawImage(state.image, 0, 0);
        const a = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const b = plain.getImageData(0, 0, canvas.width, canvas.height).data;
        let changed = 0;
        for (let i = 0; i < a.length; i += 4) {
            if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) changed++;
        }
        return changed / (a.length / 4);
    }""")
    covered = sum(s["area"] for s in expected["segments"]) / (expected["width"] * expected["height"])
    assert changed > 0.9 * covered > 0, f"{changed:.1%} of the pixels carry the overlay, {covered:.1%} are segments"

    items.nth(1).hover()
    page.wait_for_function("document.getElementById('overlay').dataset.focus === '1'")
    assert "active" in items.nth(1).get_attribute("class")
    assert expected["segments"][1]["label"] in page.text_content("#hover-label")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "serve-demo-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.select_option("#task", "semantic")  # the task switch re-segments, and semantic has no threshold
    page.wait_for_function("state.result !== null && state.result.task === 'semantic'")
    assert page.eval_on_selector("#threshold", "t => t.disabled")
    scores = page.locator("#segments .score").all_text_contents()
    assert scores and all("·" not in s and s.endswith("%") for s in scores)  # no score, only the area
    page.close()
    assert problems == [], problems
