"""The torchvision cards, served with random weights: shapes, layer lists, and the published-map layers."""

import pytest

from tests.conftest import jpeg


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_id", "layer", "shape"),
    [
        ("alexnet", "features.2", [64, 27, 27]),
        ("resnet18", "layer3", [256, 14, 14]),
        ("resnet50", "layer4.0", [2048, 7, 7]),
    ],
)
def test_untrained_models_analyse(untrained_client, model_id, layer, shape):
    response = untrained_client.post(
        "/api/v1/analyses", files={"file": ("c.jpg", jpeg("coffee"), "image/jpeg")}, data={"model": model_id}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["trained"] is False and body["model"] == model_id
    layers = {entry["name"]: entry for entry in body["layers"]}
    assert layers[layer]["shape"] == shape
    assert untrained_client.get(layers[layer]["atlas_url"]).status_code == 200


def test_untrained_models_are_listed_as_analysable(untrained_client):
    models = {m["id"]: m for m in untrained_client.get("/api/v1/models").json()["data"]}
    assert models["vgg16"]["weights_available"] is False and models["vgg16"]["analysable"] is True
