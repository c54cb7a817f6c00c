import io

import numpy as np
from PIL import Image

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
