"""The web UI in headless Chromium against a real server: upload, hierarchy, channel panel, explorer, errors.

Every test fails on console errors or warnings (CSP violations included), failed requests and HTTP errors it
did not expect. Full-page screenshots land in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import APIResponse, Page, Route, expect

from tests.web.conftest import LIVE_MAX_UPLOAD_BYTES, Watch, artifact

pytestmark = pytest.mark.browser

OpenPage = Callable[..., tuple[Page, Watch]]
ANALYSIS_URL = re.compile(r"/analyses/[0-9a-f]{32}$")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
ANALYSIS_TIMEOUT_MS = 120_000  # two slow cores may be busy with another analysis

ALL_ATLASES_LOADED = """() => {
  const images = [...document.querySelectorAll("img.atlas-img, img.input-image")];
  return images.length > 1 && images.every((image) => image.complete && image.naturalWidth > 0);
}"""
VISIBLE_TILES_LOADED = """() => {
  const images = [...document.querySelectorAll(".channel-tile img")].filter((image) => {
    const box = image.getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  });
  return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def wait_for_analysis(page: Page) -> None:
    expect(page).to_have_url(ANALYSIS_URL, timeout=ANALYSIS_TIMEOUT_MS)
    expect(page.locator(".prediction-list li")).to_have_count(5)
    page.wait_for_function(ALL_ATLASES_LOADED)


def test_upload_a_photo_and_explore_it(open_page: OpenPage, coffee_jpeg: Path) -> None:
    page, watch = open_page(viewport=DESKTOP, color_scheme="light")
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("See what a network sees")
    page.screenshot(path=artifact("home-desktop-light.png"), full_page=True)

    page.set_input_files("#file", coffee_jpeg)  # the page submits on its own once the file passes its checks
    wait_for_analysis(page)
    expect(page.locator(".prediction-label")).to_have_text("espresso")
    expect(page).to_have_title(re.compile(r"^Espresso · "))
    expect(page.locator(".site-header")).to_have_count(1)  # htmx swapped in a fragment, not a page in a page

    # One row per stage, from the eye to IT, and every curated layer shown once with its atlas.
    stages = page.locator("ol.hierarchy > li.stage")
    expect(stages.first).to_have_id("stage-LGN")
    expect(page.locator("#stage-IT")).to_be_visible()
    expect(page.locator(".layer-card")).to_have_count(10)
    expect(page.locator("#layer-blocks-2 .layer-meta")).to_contain_text("Receptive field")
    expect(page.locator("#stage-V1 .fact").first).to_contain_text("Cavanaugh")
    page.screenshot(path=artifact("analysis-desktop-light.png"), full_page=True)

    # A channel by mouse: the panel, the enlarged map, the overlay slider.
    page.locator("#layer-blocks-2 .tile").first.click()
    panel = page.locator("#channel-panel")
    expect(panel).to_be_visible()
    expect(panel.get_by_role("heading", level=2)).to_have_text(re.compile(r"^Channel \d+$"))
    expect(panel.locator(".channel-stats")).to_contain_text("Rank")
    expect(panel.locator(".channel-stats dd").nth(2)).to_contain_text("1 / 40")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#channel-panel img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    slider = panel.locator("input[type=range]")
    expect(panel.locator(".overlay-map")).to_have_css("opacity", "0.6")
    slider.fill("25")
    expect(panel.locator("output")).to_have_text("25%")
    expect(panel.locator(".overlay-map")).to_have_css("opacity", "0.25")
    panel.locator("a[rel=next]").click()
    expect(panel.locator(".channel-stats dd").nth(2)).to_contain_text("2 / 40")
    page.screenshot(path=artifact("channel-panel-desktop-light.png"))
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # The same by keyboard: Enter on a focused tile opens the panel, Escape closes it and focus returns.
    tile = page.locator("#layer-blocks-3 .tile").nth(1)
    tile.focus()
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    expect(panel.get_by_role("heading", level=2)).to_be_focused()
    expect(panel.locator(".channel-stats dd").nth(2)).to_contain_text("2 / 80")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(tile).to_be_focused()

    # The layer explorer: bn2's 1280 channels arrive a page at a time as the list scrolls.
    explorer = page.locator("#explorer")
    expect(explorer.locator(".chip.is-active")).to_have_text("bn2")
    tiles = explorer.locator(".channel-tile")
    expect(tiles).to_have_count(0)  # the first page too waits until the explorer is seen
    for loaded in (48, 96, 144):
        explorer.locator(".channel-more a").scroll_into_view_if_needed()
        # At least this many: the next page may already be on its way if the new last item is in view too.
        expect(tiles.nth(loaded - 1)).to_contain_text(f"#{loaded}")
    page.wait_for_function(VISIBLE_TILES_LOADED)

    # Another layer: the explorer swaps in place and the page stays where it is.
    explorer.get_by_role("link", name="blocks.2", exact=True).click()
    expect(page.locator("#explorer .chip.is-active")).to_have_text("blocks.2")
    expect(page.locator("#explorer .channel-tile")).to_have_count(40)
    expect(page.locator("#explorer .channel-more")).to_have_count(0)
    expect(page).to_have_url(ANALYSIS_URL)

    expect(page).to_have_title(re.compile(r"^Espresso · "))

    # Back and forward move between the form and the analysis, as with page loads.
    page.go_back()
    expect(page.locator("#upload-form")).to_be_visible()
    page.go_forward()
    wait_for_analysis(page)
    # It comes back scrolled to where it was left, the explorer, whose first page loads again as it is seen. A
    # reload before that page arrives would cancel its request.
    expect(page.locator("#explorer .channel-tile").nth(47)).to_contain_text("#48")

    # The URL is shareable: a reload shows the same analysis.
    page.reload()
    wait_for_analysis(page)
    expect(page.locator(".prediction-label")).to_have_text("espresso")
    assert watch.problems == []


def test_dark_mode_and_phone_width(open_page: OpenPage, live_coffee_id: str) -> None:
    page, watch = open_page(viewport=DESKTOP, color_scheme="dark")
    page.goto(f"/analyses/{live_coffee_id}")
    wait_for_analysis(page)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 19)"
    page.screenshot(path=artifact("analysis-desktop-dark.png"), full_page=True)
    page.goto("/")
    page.screenshot(path=artifact("home-desktop-dark.png"), full_page=True)

    phone, phone_watch = open_page(viewport=PHONE, color_scheme="light", has_touch=True)
    phone.goto("/")
    phone.screenshot(path=artifact("home-phone.png"), full_page=True)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.goto(f"/analyses/{live_coffee_id}")
    wait_for_analysis(phone)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=artifact("analysis-phone.png"), full_page=True)
    phone.locator("#layer-bn1 .tile").first.click()
    expect(phone.locator("#channel-panel")).to_be_visible()
    phone.wait_for_function(
        "() => [...document.querySelectorAll('#channel-panel img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    phone.screenshot(path=artifact("channel-panel-phone.png"))
    assert watch.problems == [] and phone_watch.problems == []


def test_drop_and_paste_upload(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    page.goto("/")
    page.evaluate(
        """async () => {
          const blob = await (await fetch("/samples/chelsea.jpg")).blob();
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "chelsea.jpg", { type: "image/jpeg" }));
          const zone = document.querySelector("[data-dropzone]");
          zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
          zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }"""
    )
    wait_for_analysis(page)
    expect(page.locator(".prediction-label")).to_contain_text("cat")

    page.goto("/")
    page.evaluate(
        """async () => {
          const blob = await (await fetch("/samples/rocket.jpg")).blob();
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "image.png", { type: "image/jpeg" }));
          const paste = new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
          document.body.dispatchEvent(paste);
        }"""
    )
    wait_for_analysis(page)
    expect(page.locator(".summary-meta")).to_be_visible()
    assert watch.problems == []


def test_sample_shows_progress_then_the_analysis(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    page.goto("/")

    held: list[Route] = []
    # Progress appears only for analyses that take more than a quarter of a second: hold this request back until
    # the progress has been seen, then let it go to the server.
    page.route("**/analyses", lambda route: held.append(route))
    page.get_by_role("button", name="Analyse the sample Grating 45°").click()
    progress = page.locator("#upload-progress")
    expect(progress).to_be_visible()
    expect(progress).to_contain_text("Analysing")
    expect(progress).to_contain_text("Grating 45°")
    expect(page.get_by_role("button", name="Analyse the sample Grating 45°")).to_be_disabled()
    expect(page.locator("#file")).to_be_disabled()
    held[0].continue_()
    wait_for_analysis(page)
    expect(page.locator(".summary .input-image")).to_be_visible()
    assert watch.problems == []


def test_the_analysis_starts_at_its_top_with_focus_on_it(open_page: OpenPage) -> None:
    page, watch = open_page(viewport={"width": 1280, "height": 500})
    page.goto("/")
    sample = page.get_by_role("button", name="Analyse the sample Grating 45°")
    sample.scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 0  # the samples are below the fold of this short window
    sample.click()
    wait_for_analysis(page)
    assert page.evaluate("window.scrollY") == 0
    expect(page.locator("#main")).to_be_focused()
    assert watch.problems == []


def test_a_slow_failure_leaves_the_form_usable_again(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    watch.expected_statuses.add(503)
    page.goto("/")
    held: list[Route] = []
    page.route("**/analyses", lambda route: held.append(route))
    sample = page.get_by_role("button", name="Analyse the sample Grating 45°")
    sample.click()
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(sample).to_be_disabled()
    held[0].fulfill(status=503, json={"detail": "the server is busy; retry in a few seconds"})
    expect(page.locator("#upload-error")).to_contain_text("the server is busy")
    expect(page.locator("#upload-progress")).to_be_hidden()
    expect(sample).to_be_enabled()
    expect(page.locator("#file")).to_be_enabled()
    assert watch.problems == []


def test_a_quick_analysis_shows_no_flash_of_progress(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    page.goto("/")
    answers: list[APIResponse] = []

    def answer_at_once(route: Route) -> None:
        # The first answer is the server's; the second is the same answer again with no wait at all.
        if not answers:
            answers.append(route.fetch())
        route.fulfill(response=answers[0])

    page.route("**/analyses", answer_at_once)
    page.get_by_role("button", name="Analyse the sample Grating 45°").click()
    wait_for_analysis(page)
    page.goto("/")
    page.evaluate(
        """() => {
          const progress = document.querySelector("#upload-progress");
          window.progressShown = false;
          const look = () => {
            if (!progress.isConnected) return;
            if (progress.checkVisibility({ visibilityProperty: true })) window.progressShown = true;
            requestAnimationFrame(look);
          };
          requestAnimationFrame(look);
        }"""
    )
    page.get_by_role("button", name="Analyse the sample Grating 45°").click()
    wait_for_analysis(page)
    assert page.evaluate("window.progressShown") is False
    assert watch.problems == []


def test_client_side_checks_stop_bad_files_before_upload(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    page.goto("/")
    error = page.locator("#upload-error")
    expect(error).to_be_hidden()

    page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"})
    expect(error).to_be_visible()
    expect(error).to_contain_text("the file is not an image in a format we can read")

    too_big = b"\xff\xd8\xff" + bytes(LIVE_MAX_UPLOAD_BYTES)
    page.set_input_files("#file", {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": too_big})
    expect(error).to_have_text(f"the upload is larger than the limit of {LIVE_MAX_UPLOAD_BYTES:,} bytes")

    page.get_by_role("button", name="Analyse", exact=True).click()
    expect(error).to_contain_text("larger than the limit")
    assert not [request for request in watch.requests if request.startswith("POST")]
    assert watch.problems == []


def test_server_errors_appear_inline(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP)
    watch.expected_statuses.add(415)
    page.goto("/")
    with page.expect_response(re.compile(r"/analyses$")) as answer:
        page.set_input_files("#file", {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": b"plain text"})
    assert answer.value.status == 415
    error = page.locator("#upload-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("the file is not an image in a format we can read")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#upload-form")).to_be_visible()
    page.screenshot(path=artifact("home-inline-error.png"))
    assert watch.problems == []
