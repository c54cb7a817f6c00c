"""The Lab in headless Chromium against a real server: an orientation-tuning run from the form to its plots,
the lazy receptive fields, Grad-CAM's pickers and a comparison. Fails on console errors, CSP violations, failed
requests and unexpected HTTP errors (see tests/web/conftest.py); screenshots land in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Watch, artifact

pytestmark = pytest.mark.browser

OpenPage = Callable[..., tuple[Page, Watch]]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
SLOW_MS = 90_000
IMAGES_LOADED = """(selector) => {
  const images = [...document.querySelectorAll(selector)];
  return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def test_orientation_tuning_from_the_lab_page(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=DESKTOP, color_scheme="light")
    page.goto("/")
    page.get_by_role("link", name="Lab", exact=True).click()
    expect(page).to_have_url(re.compile(r"/lab$"))
    expect(page.get_by_role("heading", name="Orientation tuning")).to_be_visible()
    # The receptive fields load lazily once their section is scrolled into view, with a loading state first.
    page.locator("#fields").scroll_into_view_if_needed()
    expect(page.locator("#fields .field-layer").first).to_be_visible(timeout=SLOW_MS)
    page.wait_for_function(IMAGES_LOADED, arg="#fields img", timeout=SLOW_MS)
    page.screenshot(path=artifact("lab-desktop-light.png"), full_page=True)

    page.select_option("#tuning-layer", "blocks.0")
    page.select_option("#tuning-preset", "quick")
    page.get_by_role("button", name="Run the experiment").click()
    expect(page).to_have_url(re.compile(r"/lab/experiments/[0-9a-f]{32}$"), timeout=SLOW_MS)
    expect(page.locator(".site-header")).to_have_count(1)
    # Progress is shown (or the run was already done by the time the page arrived), then the results.
    expect(page.locator("#experiment[data-status]")).to_be_visible()
    expect(page.locator("#experiment[data-status=done]")).to_be_visible(timeout=SLOW_MS)
    page.wait_for_function(IMAGES_LOADED, arg="#experiment img.lab-chart", timeout=SLOW_MS)
    expect(page.locator(".lab-facts")).to_contain_text("Hubel, Wiesel & LeVay 1977")
    expect(page.locator(".definitions")).to_contain_text("R_pref")
    page.screenshot(path=artifact("lab-experiment-desktop-light.png"), full_page=True)

    assert watch.problems == []


def test_a_run_can_be_cancelled_by_keyboard(open_page: OpenPage) -> None:
    page, watch = open_page(viewport=PHONE, color_scheme="dark")
    page.goto("/lab")
    page.select_option("#tuning-preset", "standard")
    page.locator("#tuning-form button[type=submit]").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/lab/experiments/[0-9a-f]{32}$"), timeout=SLOW_MS)
    cancel = page.get_by_role("button", name="Cancel")
    if cancel.count():  # the run may already be over on a fast machine
        page.screenshot(path=artifact("lab-progress-phone-dark.png"), full_page=True)
        cancel.focus()
        page.keyboard.press("Enter")
    expect(page.locator("#experiment[data-status=cancelled], #experiment[data-status=done]")).to_be_visible(
        timeout=SLOW_MS
    )
    assert watch.problems == []


def test_gradcam_and_a_comparison_from_the_analysis_page(open_page: OpenPage, live_coffee_id: str) -> None:
    page, watch = open_page(viewport=DESKTOP, color_scheme="light")
    page.goto(f"/analyses/{live_coffee_id}")
    # Below the hierarchy, and lazy: a backward pass is not started for a reader who never scrolls that far.
    assert page.evaluate("() => document.querySelector('#gradcam img').complete") is False
    page.locator("#gradcam").scroll_into_view_if_needed()
    page.wait_for_function(IMAGES_LOADED, arg="#gradcam img", timeout=SLOW_MS)
    page.get_by_role("radio", name=re.compile("cup")).check()
    expect(page.locator("#gradcam img")).to_have_attribute("src", re.compile(r"class_index=968"), timeout=SLOW_MS)
    page.select_option("#gradcam-layer", "blocks.4")
    expect(page.locator("#gradcam img")).to_have_attribute("src", re.compile(r"layer=blocks\.4"), timeout=SLOW_MS)
    page.wait_for_function(IMAGES_LOADED, arg="#gradcam img", timeout=SLOW_MS)
    page.locator("#gradcam").screenshot(path=artifact("gradcam-panel.png"))

    page.select_option("#compare-sample", "chelsea")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(r"/comparisons/[0-9a-f]{32}-[0-9a-f]{32}$"), timeout=SLOW_MS)
    page.wait_for_function(IMAGES_LOADED, arg=".lab-chart, .compare-input img", timeout=SLOW_MS)
    expect(page.locator(".compare-explanation")).to_contain_text("DiCarlo")
    page.screenshot(path=artifact("comparison-desktop-light.png"), full_page=True)
    assert watch.problems == []
