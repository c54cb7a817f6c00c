import io
import sys
import threading

import numpy as np
from PIL import Image

from app.api import analyses as analyses_api
from app.engine.analysis import atlas_key, channel_key, input_key
from tests.conftest import encode, jpeg, photo


def test_post_returns_predictions_layers_and_timing(client):
    # A crop no other test uploads, so that this analysis is new whatever ran before (201, not 200).
    cropped = encode(photo("rocket")[7:, 5:].copy(), "JPEG", quality=90)
    response = client.post("/api/v1/analyses", files={"file": ("rocket.jpg", cropped, "image/jpeg")})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/analyses/{body['id']}"
    timing = response.headers["server-timing"]
    for metric in ("decode;dur=", "forward;dur=", "total;dur="):
        assert metric in timing
    assert body["model"] == "efficientnet_lite0" and body["trained"] is True
    assert body["image"] == {"width": 635, "height": 420, "format": "JPEG"}
    assert len(body["predictions"]) == 5
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    layer = next(layer for layer in body["layers"] if layer["name"] == "blocks.2")
    assert layer["shape"] == [40, 28, 28]
    assert 0 <= layer["stats"]["sparsity"] <= 1 and layer["stats"]["max"] >= layer["stats"]["mean"]
    means = [channel["mean"] for channel in layer["top_channels"]]
    assert len(means) == 16 and means == sorted(means, reverse=True)


def test_the_coffee_photo_is_espresso(coffee_analysis):
    assert coffee_analysis["predictions"][0]["label"] == "espresso"


def test_same_upload_same_id_computed_once(client, coffee_analysis):
    again = client.post("/api/v1/analyses", files={"file": ("other-name.jpg", jpeg("coffee"), "image/jpeg")})
    assert again.status_code == 200  # found, not created
    assert again.json()["id"] == coffee_analysis["id"]
    assert "forward" not in again.headers["server-timing"]


def test_get_returns_the_same_body(client, coffee_analysis):
    response = client.get(f"/api/v1/analyses/{coffee_analysis['id']}")
    assert response.status_code == 200 and "total;dur=" in response.headers["server-timing"]
    assert response.json() == coffee_analysis


def test_atlas_channel_input_and_npy(client, coffee_analysis):
    layer = next(layer for layer in coffee_analysis["layers"] if layer["name"] == "blocks.3")
    atlas = client.get(layer["atlas_url"])
    assert atlas.status_code == 200 and atlas.headers["content-type"] == "image/png"
    assert "immutable" in atlas.headers["cache-control"]
    image = Image.open(io.BytesIO(atlas.content))
    columns, rows = layer["atlas"]["columns"], layer["atlas"]["rows"]
    assert image.size == (columns * 15 - 1, rows * 15 - 1)  # 14×14 tiles with 1-px gaps

    channel = layer["top_channels"][0]["index"]
    single = client.get(f"{layer['channels_url']}/{channel}.png")
    assert Image.open(io.BytesIO(single.content)).size == (14, 14)

    view = Image.open(io.BytesIO(client.get(coffee_analysis["input_url"]).content))
    assert view.size == (224, 224) and view.mode == "RGB"

    npy = client.get(layer["activations_url"])
    array = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (80, 14, 14)
    assert np.isclose(array[channel].mean(), layer["top_channels"][0]["mean"], rtol=1e-4)


async def no_worker_thread(*_: object) -> bytes:
    raise AssertionError("a picture already rendered went to a worker thread")


def test_a_picture_rendered_once_is_answered_without_a_worker_thread(client, monkeypatch):
    posted = client.post("/api/v1/analyses", files={"file": ("chelsea.jpg", jpeg("chelsea"), "image/jpeg")})
    chelsea_analysis_id = posted.json()["id"]
    analyser = client.app.state.runtime.analyser  # type: ignore[attr-defined]
    base = f"/api/v1/analyses/{chelsea_analysis_id}"
    pictures = [
        (input_key(), f"{base}/input.png"),
        (atlas_key("blocks.2"), f"{base}/layers/blocks.2/atlas.png"),
        (channel_key("blocks.2", 3), f"{base}/layers/blocks.2/channels/3.png"),
    ]
    for key, url in pictures:
        analyser.store.get(chelsea_analysis_id).renders.pop(key, None)  # not rendered ahead, or not yet
        assert analyser.rendered(chelsea_analysis_id, key) is None
        made = client.get(url)  # made on a worker thread
        assert made.status_code == 200 and analyser.rendered(chelsea_analysis_id, key) == made.content
        monkeypatch.setattr(analyses_api, "run_in_threadpool", no_worker_thread)
        again = client.get(url)  # answered on the event loop, with the same headers
        monkeypatch.undo()
        assert again.content == made.content and again.headers["etag"] == made.headers["etag"]
        assert again.headers["content-type"] == "image/png" and "immutable" in again.headers["cache-control"]
    assert analyser.rendered("0" * 32, input_key()) is None


def test_one_analysis_renders_many_pictures_on_several_threads_at_once(client):
    # A page of channel tiles asks for dozens of one analysis's pictures at once, each made on a worker thread;
    # summing the analysis's renders for the store while another thread added one raised, and the browser got a 500.
    posted = client.post("/api/v1/analyses", files={"file": ("astronaut.jpg", jpeg("astronaut"), "image/jpeg")})
    analyser = client.app.state.runtime.analyser  # type: ignore[attr-defined]
    analysis = analyser.get(posted.json()["id"])
    channels = analysis.layer("bn2").shape[0]
    failures: list[BaseException] = []

    def render(first: int) -> None:
        for channel in range(first, channels, 4):
            try:
                analyser.channel_png(analysis, "bn2", channel)
            except Exception as error:  # every failure is collected and shown below
                failures.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can, so that a race shows in one run
    try:
        threads = [threading.Thread(target=render, args=(first,)) for first in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert all(channel_key("bn2", channel) in analysis.renders for channel in range(channels))


def test_maps_and_arrays_are_revalidated_by_their_etag(client, coffee_analysis):
    layer = next(layer for layer in coffee_analysis["layers"] if layer["name"] == "blocks.1")
    channel = layer["top_channels"][0]["index"]
    urls = [
        coffee_analysis["input_url"],
        layer["atlas_url"],
        f"{layer['channels_url']}/{channel}.png",
        layer["activations_url"],
    ]
    tags = set()
    for url in urls:
        first = client.get(url)
        etag = first.headers["etag"]
        assert first.status_code == 200 and etag.startswith('"') and etag.endswith('"')
        tags.add(etag)
        again = client.get(url)
        assert again.headers["etag"] == etag  # the same bytes, the same tag
        for held in (etag, f"W/{etag}", f'"elsewhere", {etag}', "*"):
            unchanged = client.get(url, headers={"If-None-Match": held})
            assert unchanged.status_code == 304 and unchanged.content == b""
            assert unchanged.headers["etag"] == etag and "immutable" in unchanged.headers["cache-control"]
        assert client.get(url, headers={"If-None-Match": '"elsewhere"'}).content == first.content
    assert len(tags) == len(urls)
    download = client.get(layer["activations_url"], headers={"If-None-Match": '"elsewhere"'})
    filename = f"{coffee_analysis['id'][:12]}-blocks.1.npy"
    assert download.headers["content-disposition"] == f'attachment; filename="{filename}"'


def test_channel_pages_are_sorted_and_complete(client, coffee_analysis):
    layer = next(layer for layer in coffee_analysis["layers"] if layer["name"] == "bn2")
    first = client.get(layer["channels_url"], params={"limit": 256}).json()
    last = client.get(layer["channels_url"], params={"offset": 1280 - 10, "limit": 256}).json()
    assert first["total"] == 1280 and first["count"] == 256 and last["count"] == 10
    means = [c["mean"] for c in first["data"]]
    assert means == sorted(means, reverse=True) and first["data"][0]["rank"] == 1
    assert last["data"][-1]["rank"] == 1280
