"""The pages without JavaScript (plain form posts and links), the htmx fragments, and the page/API agreement."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from app.brain import AREA_IDS, load_areas
from app.web.samples import SAMPLES
from tests.conftest import encode, jpeg, photo


class Scan(HTMLParser):
    """Collects what the CSP and the no-JS tests look at: image sources, scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline_code: list[str] = []
        self.resources: list[str] = []
        self.options: list[dict[str, str | None]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.append(str(attributes["id"]))
        for name in attributes:
            if name == "style" or name.startswith("on"):
                self.inline_code.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.inline_code.append("<style>")
        if tag == "script":
            self.scripts.append(attributes)
            if not attributes.get("src"):
                self.inline_code.append("<script> without src")
        if tag == "img":
            self.images.append(str(attributes.get("src")))
        if tag in ("img", "script") and attributes.get("src"):
            self.resources.append(str(attributes["src"]))
        if tag == "link" and attributes.get("href"):
            self.resources.append(str(attributes["href"]))
        if tag == "option":
            self.options.append(attributes)


def scan(html: str) -> Scan:
    parser = Scan()
    parser.feed(html)
    return parser


def post_photo(client: TestClient, name: str = "coffee", **data: str) -> object:
    return client.post("/analyses", files={"file": (f"{name}.jpg", jpeg(name), "image/jpeg")}, data=data)


@pytest.fixture(scope="module")
def coffee_page(client: TestClient) -> tuple[str, str]:
    """(analysis id, page HTML) after the form post a browser without JavaScript makes."""
    response = post_photo(client)
    assert response.status_code == 200, response.text  # after following the 303
    assert response.history and response.history[0].status_code == 303
    match = re.search(r"/analyses/([0-9a-f]{32})$", str(response.url))
    assert match, response.url
    return match.group(1), response.text


def test_form_post_without_javascript_gives_a_complete_page(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, html = coffee_page
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<title>Espresso · EfficientNet-Lite0 · cortexlens</title>" in html
    assert '<span class="prediction-label">espresso</span>' in html
    page = scan(html)
    assert len(page.images) >= 12  # the input, every layer's atlas, Grad-CAM
    # The explorer's channels come a page at a time; without JavaScript its first page is a link away.
    assert f'href="/analyses/{analysis_id}/layers/bn2?offset=0"' in html
    for source in page.images:
        response = client.get(source)
        assert response.status_code == 200, source
        assert response.headers["content-type"] == "image/png", source


def test_the_page_shows_what_the_api_returns(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, html = coffee_page
    body = client.get(f"/api/v1/analyses/{analysis_id}").json()
    assert body["input_url"] in html
    for layer in body["layers"]:
        assert layer["atlas_url"] in html
        assert layer["activations_url"] in html
        for channel in layer["atlas"]["channels"]:
            assert f'/analyses/{analysis_id}/layers/{layer["name"]}/channels/{channel}"' in html


def test_hierarchy_runs_from_the_eye_to_it_with_sourced_facts(coffee_page: tuple[str, str]) -> None:
    _, html = coffee_page
    order = [html.index(f'id="stage-{area}"') for area in AREA_IDS]
    assert order == sorted(order)
    for area in load_areas():
        for kind in ("rf_size", "latency", "features"):
            for fact in area.facts_of(kind):
                assert escape(fact.text) in html
                assert escape(fact.source) in html
    # Each layer appears once, in network order, with its receptive field.
    names = re.findall(r'<article class="layer-card" id="layer-([\w-]+)"', html)
    assert names == [
        "conv_stem",
        "bn1",
        "blocks-0",
        "blocks-1",
        "blocks-2",
        "blocks-3",
        "blocks-4",
        "blocks-5",
        "blocks-6",
        "bn2",
    ]
    assert html.count("<dt>Receptive field</dt>") == len(names)


def test_rows_show_the_layers_the_alignment_api_places(client: TestClient, coffee_page: tuple[str, str]) -> None:
    _, html = coffee_page
    alignment = client.get("/api/v1/models/efficientnet_lite0/alignment").json()
    for band in alignment["illustrative"]["areas"]:
        row = html[html.index(f'id="stage-{band["area"]}"') :]
        row = row[: row.index("</li>")]
        shown = re.findall(r'<article class="layer-card" id="layer-([\w-]+)"', row)
        assert shown == [name.replace(".", "-") for name in band["layers"]], band["area"]


def test_text_file_named_jpg_is_refused_inline_with_the_api_sentence(client: TestClient) -> None:
    files = {"file": ("notes.jpg", b"these are my notes, not a photo", "image/jpeg")}
    api = client.post("/api/v1/analyses", files=files)
    page = client.post("/analyses", files=files)
    assert api.status_code == page.status_code == 415
    sentence = api.json()["detail"]
    assert f"data-upload-error>{escape(sentence)}</p>" in page.text
    assert 'id="upload-form"' in page.text and page.text.lstrip().lower().startswith("<!doctype html>")


def test_model_without_weights_is_refused_inline_with_the_api_sentence(client: TestClient) -> None:
    files = {"file": ("c.jpg", jpeg("coffee"), "image/jpeg")}
    api = client.post("/api/v1/analyses", files=files, data={"model": "alexnet"})
    page = post_photo(client, model="alexnet")
    assert api.status_code == page.status_code == 409
    sentence = api.json()["detail"]
    assert "not installed" in sentence
    assert f"data-upload-error>{escape(sentence)}</p>" in page.text
    # A model that cannot run is not left selected: the form falls back to one that can.
    assert re.search(r'<option value="efficientnet_lite0" selected>', page.text)


def test_missing_image_and_unknown_sample_and_model(client: TestClient) -> None:
    empty = client.post("/analyses", files={"file": ("", b"", "application/octet-stream")})
    assert empty.status_code == 422 and "choose an image file to analyse" in empty.text
    sample = client.post("/analyses", data={"sample": "nothing"})
    assert sample.status_code == 404 and "there is no sample named &#39;nothing&#39;" in sample.text
    model = post_photo(client, model="lenet")
    api = client.get("/api/v1/models/lenet")
    assert model.status_code == api.status_code == 404
    assert escape(api.json()["detail"]) in model.text


def test_home_lists_every_model_and_the_limits(client: TestClient) -> None:
    html = client.get("/").text
    options = {option["value"]: option for option in scan(html).options}
    models = {model["id"]: model for model in client.get("/api/v1/models").json()["data"]}
    assert set(options) == set(models)
    for model_id, model in models.items():
        option = options[model_id]
        assert ("disabled" in option) is (not model["analysable"])
        if not model["analysable"]:
            assert option["title"] == model["weights_note"]
            assert escape(model["weights_note"]) in html  # shown, not only in a tooltip
    assert "selected" in options["efficientnet_lite0"]
    assert f'data-max-bytes="{client.app.state.runtime.settings.max_upload_bytes}"' in html  # type: ignore[attr-defined]


def test_samples_are_served_and_analysable(client: TestClient) -> None:
    for sample in SAMPLES.values():
        for url in (sample.url, sample.thumbnail_url):
            response = client.get(url)
            assert response.status_code == 200 and response.headers["content-type"] == sample.media_type, url
        assert f'value="{sample.name}"' in client.get("/").text
    assert client.get("/samples/coffee.png").status_code == 404
    response = client.post("/analyses", data={"sample": "grating-90"}, follow_redirects=False)
    assert response.status_code == 303 and re.fullmatch(r"/analyses/[0-9a-f]{32}", response.headers["location"])
    assert client.get(response.headers["location"]).status_code == 200


def test_an_htmx_upload_gets_the_analysis_page_and_its_url_in_one_answer(client: TestClient) -> None:
    htmx = {"HX-Request": "true", "HX-Request-Type": "partial"}
    files = {"file": ("chelsea.jpg", jpeg("chelsea"), "image/jpeg")}
    response = client.post("/analyses", files=files, headers=htmx, follow_redirects=False)
    assert response.status_code == 200 and not response.history
    page_url = response.headers["HX-Push-Url"]
    assert re.fullmatch(r"/analyses/[0-9a-f]{32}", page_url)
    assert response.text == client.get(page_url, headers=htmx).text  # what a reload of that URL swaps in


def test_an_upload_says_where_its_time_went(client: TestClient) -> None:
    htmx = {"HX-Request": "true", "HX-Request-Type": "partial"}
    files = {"file": ("rocket.png", encode(photo("rocket")[40:280, 60:300], "PNG"), "image/png")}
    first = client.post("/analyses", files=files, headers=htmx, follow_redirects=False)
    again = client.post("/analyses", files=files, follow_redirects=False)
    durations = dict(re.findall(r"(\w+);dur=([\d.]+)", first.headers["Server-Timing"]))
    assert set(durations) == {"decode", "forward", "stats", "page", "total"}
    assert float(durations["total"]) >= float(durations["forward"]) + float(durations["page"])
    # Answered from the store, without JavaScript: a redirect, with only the total.
    assert again.status_code == 303 and re.fullmatch(r"total;dur=[\d.]+", again.headers["Server-Timing"])


def test_htmx_gets_fragments_of_the_same_urls(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, _ = coffee_page
    htmx = {"HX-Request": "true", "HX-Request-Type": "partial"}
    full = client.get(f"/analyses/{analysis_id}")
    fragment = client.get(f"/analyses/{analysis_id}", headers=htmx)
    assert "HX-Request" in full.headers["vary"] and "HX-Request" in fragment.headers["vary"]
    assert "<html" not in fragment.text and fragment.text.startswith("<title>Espresso")
    assert 'class="hierarchy"' in fragment.text
    # htmx asks for the whole page when it restores history or selects a part of it.
    restore = client.get(f"/analyses/{analysis_id}", headers={"HX-Request": "true", "HX-Request-Type": "full"})
    assert restore.text == full.text

    page = client.get(f"/analyses/{analysis_id}/layers/bn2?offset=48", headers=htmx).text
    assert page.lstrip().startswith("<li") and "<html" not in page
    assert page.count('class="channel-tile"') == 48
    assert f"/analyses/{analysis_id}/layers/bn2?offset=96" in page
    last = client.get(f"/analyses/{analysis_id}/layers/bn2?offset=1248", headers=htmx).text
    assert last.count('class="channel-tile"') == 32 and "channel-more" not in last

    whole = client.get(f"/analyses/{analysis_id}/layers/bn2?offset=48").text
    assert whole.lstrip().lower().startswith("<!doctype html>") and "← Channels 1–48" in whole
    assert 'id="explorer"' in whole


def test_channel_detail_matches_the_api(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, _ = coffee_page
    listing = client.get(f"/api/v1/analyses/{analysis_id}/layers/blocks.2/channels?offset=4&limit=1").json()
    channel = listing["data"][0]
    page = client.get(f"/analyses/{analysis_id}/layers/blocks.2/channels/{channel['index']}")
    assert page.status_code == 200
    assert f"Channel {channel['index']}</h2>" in page.text
    assert f"Rank {channel['rank']} of {listing['total']}" in page.text
    assert channel["url"] in page.text
    panel = client.get(
        f"/analyses/{analysis_id}/layers/blocks.2/channels/{channel['index']}",
        headers={"HX-Request": "true", "HX-Target": "div#channel-panel-body"},
    )
    assert "<html" not in panel.text and 'class="channel-detail"' in panel.text
    assert 'rel="prev"' in panel.text and 'rel="next"' in panel.text


def test_gone_analysis_layer_and_channel_are_404_pages(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, _ = coffee_page
    for url in (
        "/analyses/0123456789abcdef0123456789abcdef",
        f"/analyses/{analysis_id}/layers/nope",
        f"/analyses/{analysis_id}/layers/bn2/channels/5000",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"].startswith("text/html")
        assert '<a class="button primary" href="/">' in response.text
        fragment = client.get(url, headers={"HX-Request": "true"})
        assert fragment.status_code == 404 and fragment.text.startswith('<p class="notice error" role="alert">')
    gone = client.get("/analyses/0123456789abcdef0123456789abcdef").text
    assert "it never existed or has left the cache" in gone


def test_about_renders_how_to_read_and_references(client: TestClient) -> None:
    response = client.get("/about")
    assert response.status_code == 200
    assert '<h1 id="how-to-read-this">How to read this</h1>' in response.text
    assert "<strong>Published maps</strong>" in response.text
    assert 'id="ref-cavanaugh2002"' in response.text


@pytest.mark.parametrize("path", ["/", "/about", "/analyses/0123456789abcdef0123456789abcdef"])
def test_static_pages_follow_the_content_security_policy(client: TestClient, path: str) -> None:
    assert_csp_clean(client.get(path).text)


def test_analysis_pages_follow_the_content_security_policy(client: TestClient, coffee_page: tuple[str, str]) -> None:
    analysis_id, html = coffee_page
    assert_csp_clean(html)
    assert_csp_clean(client.get(f"/analyses/{analysis_id}/layers/blocks.1").text)
    assert_csp_clean(client.get(f"/analyses/{analysis_id}/layers/blocks.1/channels/3").text)


def assert_csp_clean(html: str) -> None:
    page = scan(html)
    assert page.inline_code == []
    for resource in page.resources:
        assert resource.startswith("/") and not resource.startswith("//"), resource
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    assert '"includeIndicatorCSS": false' in html  # htmx must not adopt its own indicator stylesheet


def test_static_assets_are_served(client: TestClient) -> None:
    home = client.get("/").text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', home):
        response = client.get(asset)
        assert response.status_code == 200, asset
