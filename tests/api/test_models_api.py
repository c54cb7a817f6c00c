def test_list_models(client):
    body = client.get("/api/v1/models").json()
    models = {model["id"]: model for model in body["data"]}
    assert body["count"] == len(models) == 5
    default = models["efficientnet_lite0"]
    assert default["default"] and default["weights_available"] and default["analysable"]
    assert default["input_size"] == 224 and 4_000_000 < default["num_params"] < 5_000_000
    for model_id in ("alexnet", "vgg16", "resnet18", "resnet50"):
        assert models[model_id]["weights_available"] is False
        assert models[model_id]["analysable"] is False
        assert "place" in models[model_id]["weights_note"]


def test_model_detail_lists_curated_layers_with_shapes(client):
    body = client.get("/api/v1/models/efficientnet_lite0").json()
    names = [layer["name"] for layer in body["layers"]]
    assert names[0] == "conv_stem" and names[-1] == "bn2"
    assert {f"blocks.{i}" for i in range(7)} <= set(names)
    assert body["layers"][-1]["shape"] == [1280, 7, 7]
    assert all(layer["curated"] and layer["label"] for layer in body["layers"])


def test_all_layers_lists_every_module(client):
    body = client.get("/api/v1/models/resnet50", params={"layers": "all"}).json()
    names = {layer["name"] for layer in body["layers"]}
    assert {"layer3.0.conv2", "layer4.2.relu", "fc"} <= names
    assert len(names) >= 150


def test_unknown_model_is_404_pointing_to_the_list(client):
    response = client.get("/api/v1/models/lenet")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown model 'lenet'; see GET /api/v1/models"}
