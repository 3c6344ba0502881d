"""The web UI in a real browser: Debian's headless Chromium, driven by Playwright, against ``scenecraft ui``'s page
served in this process with the toy-world model. Plans a prompt, drags one box and types a number of another,
generates, finds the image and downloads it; two pages generate at once and each gets its own image.

Chromium comes from Debian (``apt-get install chromium chromium-driver``; ``.ci/run`` installs it), never from
``playwright install``. ``SCENECRAFT_UI_SCREENSHOT=docs/ui.png`` also writes the README's screenshot there.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenecraft.imagefile import read_metadata

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, no GPU, and none of Chromium's own calls out (they are refused here).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install chromium chromium-driver` "
    "(as root; .ci/run does it) to run the browser tests"))


class Gate:
    """Wraps ``SharedPipeline.run``: records each generation's start and end, and holds the first one that
    starts while the gate is closed until :meth:`open` (so a second request surely arrives during it)."""

    def __init__(self, run):
        self.run, self.spans, self.opened = run, [], threading.Event()
        self.opened.set()
        self.started = threading.Event()

    def __call__(self, *args, **kwargs):
        start = time.monotonic()
        self.started.set()
        self.opened.wait(30)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.spans.append((start, time.monotonic()))

    def close(self):
        self.spans.clear()
        self.started.clear()
        self.opened.clear()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from scenecraft.generation import load_pipeline
    from scenecraft.ui import build_app, launch_app

    demo = build_app(load_pipeline("toyworld"), model="toyworld", out_dir=tmp_path_factory.mktemp("ui-out"))
    shared = demo.scenecraft.shared
    shared.run = Gate(shared.run)
    url = launch_app(demo, port=_free_port())
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    opened.goto(server[1])
    yield opened
    context.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status(page) -> str:
    return page.locator("#status textarea").input_value()


def wait_status(page, prefix: str) -> str:
    page.wait_for_function("prefix => document.querySelector('#status textarea').value.startsWith(prefix)",
                           arg=prefix, timeout=TIMEOUT_MS)
    return status(page)


def plan(page, prompt: str) -> None:
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#plan").click()
    wait_status(page, "planned")


def settings(page, seed: int, steps: int | None = None) -> None:
    page.locator("#seed input").fill(str(seed))
    if steps is not None:
        page.locator("#steps input").fill(str(steps))


def download(page) -> Path:
    with page.expect_download() as info:
        page.locator("#download").click()
    return Path(info.value.path())


def cells(page, row: int) -> list[str]:
    return [page.locator(f'#regions [data-testid="cell-{row}-{k}"]').inner_text().strip() for k in range(5)]


def drag(page, selector: str, dx: float, dy: float) -> None:
    where = page.locator(selector).bounding_box()
    x, y = where["x"] + where["width"] / 2, where["y"] + where["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()


def test_plan_edit_boxes_generate_and_download(page, tmp_path):
    plan(page, "a yellow triangle above a purple square")
    assert status(page) == "planned: 2 regions, 64x64"
    assert page.locator("#plan-picture img").get_attribute("src")
    assert cells(page, 0) == ["a yellow triangle", "0.2188", "0.0625", "0.7812", "0.4375"]
    assert page.locator("#boxes .sc-box").count() == 2

    canvas = page.locator("#boxes .sc-canvas").bounding_box()["width"]
    drag(page, '#boxes .sc-box[data-index="1"]', 0.125 * canvas, 0)  # the square, an eighth of the canvas right
    assert wait_status(page, "applied the boxes") == "applied the boxes: 2 regions, 64x64"
    square = [float(v) for v in cells(page, 1)[1:]]
    assert square == pytest.approx([0.2188 + 0.125, 0.5625, 0.7812 + 0.125, 0.9375], abs=0.01)

    cell = page.locator('#regions [data-testid="cell-0-4"]')  # the triangle's y1, typed
    cell.dblclick()
    editor = page.locator("#regions textarea, #regions input").first
    editor.fill("0.45")
    editor.press("Enter")
    assert wait_status(page, "applied the table") == "applied the table: 2 regions, 64x64"

    settings(page, seed=5, steps=20)
    page.locator("#generate").click()
    assert wait_status(page, "seed 5").startswith("seed 5, regional, 20 steps, 64x64")
    assert page.locator("#result img").get_attribute("src")
    assert page.locator("#history img").count() == 1

    png = download(page)
    metadata = read_metadata(png)
    assert metadata.scene.regions[0].geometry.as_list() == [0.21875, 0.0625, 0.78125, 0.45]  # typed
    assert metadata.scene.regions[1].geometry.as_list() == pytest.approx(square, abs=1e-4)  # dragged
    assert metadata.generation["seed"] == 5 and metadata.generation["config"]["num_inference_steps"] == 20
    assert Image.open(png).size == (64, 64)

    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).width >= 1000
    if target := os.environ.get("SCENECRAFT_UI_SCREENSHOT"):
        shutil.copyfile(shot, target)


def test_hostile_json_in_the_editor_is_a_sentence_in_the_status(page):
    plan(page, "a green triangle")
    editor = page.locator("#scene-json .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("a cat, very wide")
    page.locator("#apply-json").click()
    text = wait_status(page, "error:")
    assert "scene is not valid JSON" in text and "Traceback" not in text
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type('{"prompt": "x", "width": 4096}')  # the editor closes brackets and quotes as it goes
    page.locator("#apply-json").click()
    page.wait_for_function("() => document.querySelector('#status textarea').value.includes('4096')")
    assert "4096, more than the 128 pixels per side allowed (this server's limit; start `scenecraft ui --max-side" \
        in status(page)


def test_markup_in_prompts_stays_text_everywhere_on_the_page(page):
    hostile = '<img src=x onerror="window.pwned=1"> ${window.pwned=2}'
    plan(page, f"a red circle {hostile} to the left of a blue square")
    cell = page.locator('#regions [data-testid="cell-0-0"]')  # region 0's prompt, typed with markup
    cell.dblclick()
    editor = page.locator("#regions textarea, #regions input").first
    editor.fill('<img src=x onerror="window.pwned=3"> ${window.pwned=4}')
    editor.press("Enter")
    wait_status(page, "applied the table")
    settings(page, seed=1, steps=2)
    page.locator("#generate").click()
    wait_status(page, "seed 1")
    page.wait_for_timeout(300)
    label = page.locator('#boxes .sc-box[data-index="0"] span').inner_text()
    assert label == '0: <img src=x onerror="window.pwned=3"> ${window.pwned=4}'  # shown as text
    assert 'a red circle <img src=x onerror="window.pwned=1">' in page.locator("#history").inner_text()  # as text
    assert page.evaluate("window.pwned") is None and page.locator('img[src="x"]').count() == 0


def test_two_pages_generating_at_once_each_get_their_own_image(browser, server, page):
    demo, url = server
    other_context = browser.new_context(accept_downloads=True)
    other = other_context.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(url)
    try:
        requests = [(page, "a red circle to the left of a blue square", 11),
                    (other, "a green triangle above a yellow circle", 22)]
        for tab, prompt, seed in requests:
            plan(tab, prompt)
            settings(tab, seed, steps=4)
        gate = demo.scenecraft.shared.run
        gate.close()
        page.locator("#generate").click()
        assert gate.started.wait(30)  # the first generation runs (held) ...
        other.locator("#generate").click()  # ... when the second request is sent
        time.sleep(0.5)
        gate.opened.set()
        for tab, prompt, seed in requests:
            assert wait_status(tab, f"seed {seed}").startswith(f"seed {seed}, regional, 4 steps")
        (first_start, first_end), (second_start, second_end) = sorted(gate.spans)
        assert second_start >= first_end  # one at a time on the shared pipeline
        for tab, prompt, seed in requests:
            png = download(tab)
            metadata = read_metadata(png)
            assert metadata.scene.prompt == prompt and metadata.generation["seed"] == seed
            assert tab.locator("#history img").count() == 1  # each session keeps its own history
            alone = _render_alone(demo, metadata.scene, seed)
            np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(alone)))
    finally:
        other_context.close()


def _render_alone(demo, scene, seed):
    from scenecraft.ui.core import render

    handlers = demo.scenecraft
    return render(handlers.shared, scene, "regional", seed, 4, None, handlers.out_dir, handlers.limits).path
