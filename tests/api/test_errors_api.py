"""Bad input gets a clear 4xx with a stable sentence, and the server keeps serving."""

import io

import pytest
from PIL import Image

from tests.conftest import jpeg


def post(client, data: bytes, name: str = "photo.jpg", **form: str):
    return client.post("/api/v1/analyses", files={"file": (name, data, "image/jpeg")}, data=form)


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"", 422, "the uploaded file is empty"),
        (b"just some text, not a photo", 415, "the file is not an image in a format we can read"),
        (jpeg("coffee")[:3000], 422, "the image could not be decoded (image file is truncated"),
    ],
)
def test_bad_files(client, data, status, detail):
    response = post(client, data)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


def test_decompression_bomb_is_refused(client):
    buffer = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buffer, format="PNG")  # 900 Mpx in a few hundred kB
    response = post(client, buffer.getvalue(), "bomb.png")
    assert response.status_code == 413
    assert "30000×30000 = 900,000,000 pixels; the limit is 40,000,000 pixels" in response.json()["detail"]


def test_oversize_upload_is_refused_while_streaming(client):
    big = b"\xff\xd8" + b"\0" * 21_000_000
    response = post(client, big)
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 20,000,000 bytes"}


def test_unknown_model(client):
    response = post(client, jpeg("coffee"), model="lenet")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown model 'lenet'; see GET /api/v1/models"}


def test_weights_missing_is_409_naming_file_and_folder(client):
    response = post(client, jpeg("coffee"), model="vgg16")
    assert response.status_code == 409
    assert "place vgg16-397923af.pth in " in response.json()["detail"]


def test_missing_file_field(client):
    response = client.post("/api/v1/analyses", data={"model": "efficientnet_lite0"})
    assert response.status_code == 422 and response.json() == {"detail": "field 'file' is required"}


def test_unknown_analysis_layer_channel(client, coffee_analysis):
    base = f"/api/v1/analyses/{coffee_analysis['id']}"
    missing = client.get("/api/v1/analyses/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and "POST /api/v1/analyses" in missing.json()["detail"]
    layer = client.get(f"{base}/layers/fc/atlas.png")
    assert layer.status_code == 404
    assert layer.json() == {
        "detail": "unknown layer 'fc' for model 'efficientnet_lite0'; see GET /api/v1/models/efficientnet_lite0"
    }
    for channel in (40, -1):
        response = client.get(f"{base}/layers/blocks.2/channels/{channel}.png")
        assert response.status_code == 404
        assert response.json() == {"detail": f"layer 'blocks.2' has no channel {channel}; its channels are 0 to 39"}
    assert client.get(f"{base}/layers/blocks.2/channels/x.png").status_code == 422


def test_server_keeps_serving_after_bad_input(client):
    post(client, b"garbage")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert post(client, jpeg("chelsea")).status_code in (200, 201)
