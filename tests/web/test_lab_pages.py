"""The lab's pages without JavaScript (plain forms and links) and their htmx fragments: orientation tuning,
early receptive fields, Grad-CAM and two-image comparisons. Errors appear inline with the API's sentences."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import jpeg
from tests.web.test_pages import scan

QUICK = {"layer": "blocks.0", "preset": "quick"}
HX = {"HX-Request": "true"}


def assert_image(client: TestClient, url: str, media_type: str) -> None:
    response = client.get(url.replace("&amp;", "&"))
    assert response.status_code == 200, (url, response.text[:200])
    assert response.headers["content-type"].startswith(media_type), url


def assert_clean(html: str) -> None:
    assert scan(html).inline_code == []


@pytest.fixture(scope="module")
def finished_experiment(client: TestClient) -> str:
    """URL of a finished quick orientation-tuning run on one layer, started through the Lab page's form."""
    response = client.post("/lab/experiments", data=QUICK, follow_redirects=False)
    assert response.status_code == 303, response.text
    url = response.headers["location"]
    assert re.fullmatch(r"/lab/experiments/[0-9a-f]{32}", url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fragment = client.get(url, headers={**HX, "HX-Target": "section#experiment"})
        assert fragment.status_code == 200
        if 'data-status="done"' in fragment.text:
            assert "hx-trigger" not in fragment.text  # polling stops once done
            return url
        assert 'data-status="running"' in fragment.text or 'data-status="queued"' in fragment.text
        assert 'hx-trigger="every 1s"' in fragment.text and "<html" not in fragment.text
        time.sleep(0.2)
    raise AssertionError(f"{url} did not finish")


def test_the_lab_page_and_the_header_link(client: TestClient) -> None:
    response = client.get("/lab")
    assert response.status_code == 200 and "HX-Request" in response.headers["vary"]
    assert 'href="/lab"' in client.get("/").text
    html = response.text
    assert 'action="/lab/experiments"' in html and 'name="layer"' in html and 'value="blocks.0"' in html
    assert 'hx-trigger="revealed"' in html and 'href="/lab/fields?model=efficientnet_lite0"' in html
    assert_clean(html)


def test_a_finished_experiment_shows_osi_facts_definitions_and_curves(
    client: TestClient, finished_experiment: str
) -> None:
    response = client.get(finished_experiment)
    assert response.status_code == 200
    html = response.text
    assert 'http-equiv="refresh"' not in html and "hx-trigger" not in html
    assert "Hubel, Wiesel &amp; LeVay 1977" in html and "Jones &amp; Palmer 1987" in html
    assert "R_pref" in html  # the OSI definition
    images = [src for src in scan(html).images]
    osi = next(src for src in images if src.endswith("/osi.svg"))
    curves = next(src for src in images if src.endswith("/layers/blocks.0/tuning.svg"))
    assert_image(client, osi, "image/svg+xml")
    assert_image(client, curves, "image/svg+xml")
    assert_clean(html)

    panel = client.get(f"{finished_experiment}/layers/blocks.0", headers={**HX, "HX-Target": "div#tuning-panel"})
    assert panel.status_code == 200 and panel.text.lstrip().startswith('<div id="tuning-panel"')
    page = client.get(f"{finished_experiment}/layers/blocks.0")
    assert page.status_code == 200 and "<html" in page.text
    missing = client.get(f"{finished_experiment}/layers/blocks.6")
    assert missing.status_code == 404 and "unknown layer &#39;blocks.6&#39;" in missing.text


def test_a_running_experiment_refreshes_without_js_and_can_be_cancelled(client: TestClient) -> None:
    response = client.post("/lab/experiments", data={"preset": "standard"}, follow_redirects=False)
    url = response.headers["location"]
    page = client.get(url).text
    if 'data-status="done"' not in page:  # too fast to catch on a quick machine otherwise
        assert '<meta http-equiv="refresh" content="2">' in page and f'action="{url}/cancel"' in page
    cancelled = client.post(f"{url}/cancel", follow_redirects=False)
    assert cancelled.status_code == 303 and cancelled.headers["location"] == url
    deadline = time.monotonic() + 120
    while 'data-status="running"' in (page := client.get(url).text) or 'data-status="queued"' in page:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert 'data-status="cancelled"' in page or 'data-status="done"' in page


def test_experiment_errors_are_inline(client: TestClient) -> None:
    response = client.post("/lab/experiments", data={"layer": "nope", "preset": "quick"})
    assert response.status_code == 404
    assert "unknown layer &#39;nope&#39;" in response.text and 'id="tuning-form"' in response.text
    response = client.post("/lab/experiments", data={"preset": "huge"})
    assert response.status_code == 422 and "there is no stimulus set named" in response.text
    missing = client.get("/lab/experiments/" + "0" * 32)
    assert missing.status_code == 404 and 'class="notice error"' in missing.text
    assert client.post("/lab/experiments/" + "0" * 32 + "/cancel").status_code == 404


def test_early_receptive_fields(client: TestClient) -> None:
    fragment = client.get("/lab/fields", headers={**HX, "HX-Target": "section#fields"})
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<section id="fields"')
    assert "Jones &amp; Palmer 1987" in fragment.text and "chance level" in fragment.text
    assert re.search(r"R² ≥ 0\.\d+", fragment.text)
    images = scan(fragment.text).images
    assert any(src.endswith("kernels.png") for src in images)
    for suffix, media_type in (("fields.png", "image/png"), ("fits.png", "image/png"), ("r2.svg", "image/svg+xml")):
        urls = [src for src in images if suffix in src]
        assert urls, suffix
        assert_image(client, urls[0], media_type)
    assert_image(client, next(src for src in images if src.endswith("kernels.png")), "image/png")
    page = client.get("/lab/fields")
    assert page.status_code == 200 and "<html" in page.text
    unknown = client.get("/lab/fields?model=nope")
    assert unknown.status_code == 404 and "nope" in unknown.text and 'class="notice error"' in unknown.text


def test_gradcam_panel_on_the_analysis_page(client: TestClient, coffee_analysis: dict) -> None:
    analysis_id = coffee_analysis["id"]
    html = client.get(f"/analyses/{analysis_id}").text
    assert 'id="gradcam"' in html and f'action="/analyses/{analysis_id}/gradcam"' in html
    images = scan(html).images
    assert_image(client, next(src for src in images if "gradcam.png" in src), "image/png")
    # Top-5 classes as choices, curated layers with spatial maps as the other.
    assert len(re.findall(r'name="class_index"', html)) == 5
    assert 'value="blocks.5"' in html

    fragment = client.get(f"/analyses/{analysis_id}/gradcam?layer=blocks.5&class_index=968", headers=HX)
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<section id="gradcam"')
    assert "cup" in fragment.text
    src = next(src for src in scan(fragment.text).images if "gradcam.png" in src)
    assert "layer=blocks.5" in src and "class_index=968" in src
    assert_image(client, src, "image/png")
    page = client.get(f"/analyses/{analysis_id}/gradcam?layer=blocks.5")
    assert page.status_code == 200 and "<html" in page.text


@pytest.mark.parametrize(
    ("query", "status", "phrase"),
    [("layer=nope", 404, "unknown layer &#39;nope&#39;"), ("class_index=1000", 422, "between 0 and 999")],
)
def test_gradcam_errors_are_inline(
    client: TestClient, coffee_analysis: dict, query: str, status: int, phrase: str
) -> None:
    response = client.get(f"/analyses/{coffee_analysis['id']}/gradcam?{query}", headers=HX)
    assert response.status_code == status and phrase in response.text
    assert 'class="form-error" role="alert">' in response.text


def test_compare_with_a_sample_then_read_the_comparison(client: TestClient, coffee_analysis: dict) -> None:
    analysis_id = coffee_analysis["id"]
    assert 'id="compare-form"' in client.get(f"/analyses/{analysis_id}").text
    response = client.post(
        "/comparisons", data={"analysis_a": analysis_id, "sample_b": "chelsea"}, follow_redirects=False
    )
    assert response.status_code == 303
    url = response.headers["location"]
    assert re.fullmatch(rf"/comparisons/{analysis_id}-[0-9a-f]{{32}}", url)
    html = client.get(url).text
    assert "DiCarlo, Zoccolan &amp; Rust 2012" in html and "Yamins et al. 2014" in html
    assert "Early stages respond to local features" in html
    images = scan(html).images
    assert_image(client, next(src for src in images if src.endswith("similarity.svg")), "image/svg+xml")
    atlases = [src for src in images if src.endswith("atlas.png")]
    assert len(atlases) == 2 * 10
    assert_image(client, atlases[0], "image/png")
    assert_image(client, atlases[-1], "image/png")
    assert_clean(html)


def test_compare_with_an_upload(client: TestClient, coffee_analysis: dict) -> None:
    response = client.post(
        "/comparisons",
        data={"analysis_a": coffee_analysis["id"]},
        files={"file_b": ("rocket.jpg", jpeg("rocket"), "image/jpeg")},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/comparisons/")


@pytest.mark.parametrize(
    ("data", "files", "status", "phrase"),
    [
        ({}, None, 422, "choose an image file to analyse"),
        ({"sample_b": "nope"}, None, 404, "there is no sample named &#39;nope&#39;"),
        ({}, {"file_b": ("notes.txt", b"not an image", "text/plain")}, 415, "not an image"),
    ],
)
def test_comparison_errors_are_inline(
    client: TestClient, coffee_analysis: dict, data: dict, files: dict | None, status: int, phrase: str
) -> None:
    response = client.post("/comparisons", data={"analysis_a": coffee_analysis["id"], **data}, files=files)
    assert response.status_code == status and phrase in response.text
    assert 'id="compare-error" class="form-error" role="alert">' in response.text


def test_unknown_comparisons(client: TestClient) -> None:
    response = client.get("/comparisons/" + "0" * 32 + "-" + "1" * 32)
    assert response.status_code == 404 and 'class="notice error"' in response.text
    assert client.post("/comparisons", data={"analysis_a": "0" * 32, "sample_b": "chelsea"}).status_code == 404
