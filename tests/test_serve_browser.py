"""The web page in a real browser: Playwright driving Debian's headless ``chromium``.

Types a query, sees results, uploads an image with the picker and by drag and drop, clicks a
result, checks the phone-width layout and keyboard use. Screenshots go to
``test-artifacts/serve-browser/`` (or ``$XMODAL_TEST_ARTIFACTS``).
Skipped when Playwright or the chromium binary is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed: pip install 'xmodal[serve]'"
)
pytest.importorskip("playwright", reason="playwright is missing (pip install -e '.[dev]')")

from playwright.sync_api import expect, sync_playwright
from serve_toys import COLOURS, TOKEN, LiveServer, build_toy_index, png

from xmodal.serve import create_app

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip
ARTIFACTS = (
    Path(
        os.environ.get(
            "XMODAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
        )
    )
    / "serve-browser"
)


#: Drops a PNG (base64) onto ``#drop`` the way a browser does: dragenter, dragover, drop, one
#: DataTransfer. Returns which events the page cancelled (cancelling is what accepts a drop) and
#: whether the zone was highlighted while dragged over.
DROP_FILE = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
  const zone = document.getElementById("drop");
  const out = {};
  for (const type of ["dragenter", "dragover", "drop"]) {
    const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data });
    out[type] = !zone.dispatchEvent(event);
    if (type === "dragover") out.over = zone.classList.contains("over");
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_search_upload_click(browser, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    index = build_toy_index(tmp_path)
    query_image = tmp_path / "query.png"
    query_image.write_bytes(png(COLOURS["blue"], (40, 40)))
    with LiveServer(create_app(index, token=TOKEN)) as server:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_contain_text("5 images")

        # text -> image: type and press Enter
        page.get_by_label("Describe what you are looking for").fill("something red")
        page.keyboard.press("Enter")
        cards = page.locator("#results li")
        expect(cards).to_have_count(5)
        expect(cards.first).to_contain_text("a red square")
        expect(cards.first.locator("img")).to_have_attribute(
            "src", "/items/images/red.png/image?size=160"
        )
        # the thumbnail really decodes (waits for the load; fails after the timeout otherwise)
        page.wait_for_function(
            "() => { const i = document.querySelector('#results img');"
            " return i && i.complete && i.naturalWidth > 0; }",
            timeout=15_000,
        )
        page.screenshot(path=ARTIFACTS / "1-text-search.png", full_page=True)

        # image -> image: upload with the picker, Hamming mode
        page.get_by_label("Image → image").check()
        page.get_by_label("Hamming").check()
        page.set_input_files("#file", query_image)
        expect(page.locator("#preview")).to_be_visible()
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("#status")).to_contain_text("hamming")
        page.get_by_label("Float").check()
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("#status")).to_contain_text("float")
        expect(cards.first).to_contain_text("a blue square")
        page.screenshot(path=ARTIFACTS / "2-image-upload.png", full_page=True)

        # image -> image: drag a file onto the drop zone (a synthetic DataTransfer)
        green = base64.b64encode(png(COLOURS["green"], (40, 40))).decode()
        cancelled = page.evaluate(DROP_FILE, green)
        assert cancelled == {"dragenter": True, "dragover": True, "over": True, "drop": True}
        expect(page.locator("#drop")).not_to_have_class(re.compile(r"\bover\b"))
        expect(page.locator("#preview")).to_be_visible()
        assert page.evaluate("document.querySelector('#preview').src").startswith("blob:")
        assert page.evaluate("document.querySelector('#file').files[0].name") == "dropped.png"
        page.get_by_role("button", name="Search", exact=True).click()
        expect(cards.first).to_contain_text("a green square")
        expect(page.locator("#message")).to_be_hidden()
        page.screenshot(path=ARTIFACTS / "2b-drag-drop.png", full_page=True)

        # click a result: images like it
        cards.nth(1).locator("button").click()
        expect(page.get_by_label("Image → image")).to_be_checked()
        expect(cards.first).to_contain_text(cards.first.inner_text().split(" ")[1])
        first_id = page.evaluate("document.querySelector('#results button').dataset.id")
        assert first_id.startswith("images/")
        page.screenshot(path=ARTIFACTS / "3-click-result.png", full_page=True)

        # image -> text
        page.get_by_label("Image → text").check()
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("#results li").first).to_contain_text("square")

        # errors are shown, not thrown: a server refusal (415) and a missing input
        fake = tmp_path / "fake.png"
        fake.write_bytes(b"this is not a png")
        page.set_input_files("#file", fake)
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("#message")).to_contain_text("Error 415")
        expect(page.locator("#message")).to_contain_text("not a readable image")
        page.get_by_label("Text → image").check()
        page.get_by_label("Describe what you are looking for").fill("")
        page.keyboard.press("Enter")
        expect(page.locator("#message")).to_contain_text("Type something")
        assert errors == []

        # keyboard: Tab reaches the controls, Enter on a result searches like it
        page.get_by_label("Number of results").fill("4")
        page.get_by_label("Describe what you are looking for").fill("green")
        page.keyboard.press("Enter")
        expect(cards).to_have_count(4)
        cards.first.locator("button").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_label("Image → image")).to_be_checked()

        # phone width: no sideways scrolling
        phone = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2)
        phone.goto(server.url + "/")
        phone.get_by_label("Describe what you are looking for").fill("yellow")
        phone.keyboard.press("Enter")
        expect(phone.locator("#results li")).to_have_count(5)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        phone.screenshot(path=ARTIFACTS / "4-phone.png", full_page=True)
    for name in ("1-text-search", "2-image-upload", "2b-drag-drop", "3-click-result", "4-phone"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000
