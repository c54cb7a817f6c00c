"""Receptive fields and layer → area alignment as the API serves them."""

import pytest

from app.config import PROJECT_ROOT
from app.engine.cards import AREAS, load_cards

REFERENCE_RF_PX = {
    "alexnet": {
        "features.0": 11,
        "features.2": 19,
        "features.3": 51,
        "features.6": 99,
        "features.10": 163,
        "features.12": 195,
    },
    "vgg16": {"features.16": 44, "features.23": 100, "features.30": 212},
    "resnet50": {"layer2.3": 91, "layer3.0": 107, "layer4.0": 299, "layer4": 427},
}


@pytest.mark.parametrize("model_id", sorted(REFERENCE_RF_PX))
def test_reference_receptive_fields_exactly(client, model_id):
    layers = {layer["name"]: layer for layer in client.get(f"/api/v1/models/{model_id}").json()["layers"]}
    for name, rf_px in REFERENCE_RF_PX[model_id].items():
        assert layers[name]["rf_px"] == rf_px, name


def test_degrees_at_eight_degrees_and_clipped_at_the_image(client):
    body = client.get("/api/v1/models/alexnet").json()
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert body["fov_deg"] == 8
    assert layers["features.2"]["rf_deg"] == pytest.approx(19 * 8 / 224, abs=1e-3)  # ≈ 0.68°
    resnet = {layer["name"]: layer for layer in client.get("/api/v1/models/resnet50").json()["layers"]}
    assert resnet["layer4"]["rf_px"] == 427 and resnet["layer4"]["rf_deg"] == 8.0
    assert resnet["layer4"]["covers_input"] is True and resnet["layer2.3"]["covers_input"] is False


def test_every_module_carries_its_field(client):
    layers = client.get("/api/v1/models/resnet50", params={"layers": "all"}).json()["layers"]
    by_name = {layer["name"]: layer for layer in layers}
    assert by_name["layer3.0.conv2"]["stride_px"] == 16
    assert all(layer["rf_px"] and layer["rf_px"] >= 1 for layer in layers)


def test_published_mappings_as_in_the_facts_file(client):
    alexnet = client.get("/api/v1/models/alexnet/alignment").json()["published"]
    assert [m["layers"] for m in alexnet] == [
        {"V1": "features.2", "V2": "features.7", "V4": "features.7", "IT": "features.12"}
    ]
    vgg = client.get("/api/v1/models/vgg16/alignment").json()["published"][0]
    assert vgg["layers"] == {"V1": "features.16", "V2": "features.16", "V4": "features.16", "IT": "features.23"}
    assert vgg["collapsed"] == [{"layer": "features.16", "areas": ["V1", "V2", "V4"]}]
    assert vgg["notes"] and all(note["source"] for note in vgg["notes"])


def test_out_of_order_maps_are_said_plainly(client):
    resnet = client.get("/api/v1/models/resnet50/alignment").json()["published"]
    first = resnet[0]
    assert first["monotonic"] is False
    assert {
        "upstream_area": "V2",
        "downstream_area": "V4",
        "upstream_layer": "layer3.0",
        "downstream_layer": "layer2.3",
    } in first["out_of_order"]


def test_no_published_mapping_is_said_and_the_ladder_is_illustrative(client):
    body = client.get("/api/v1/models/efficientnet_lite0/alignment").json()
    assert body["published"] == [] and body["published_note"] == "no published mapping for EfficientNet-Lite0"
    ladder = body["illustrative"]
    assert ladder["kind"] == "illustrative" and "illustrat" in ladder["explanation"].lower()
    placed = [placement["layer"] for placement in ladder["layers"]]
    areas = [placement["area"] for placement in ladder["layers"]]
    order = ["LGN", "V1", "V2", "V4", "IT"]
    assert [order.index(area) for area in areas] == sorted(order.index(area) for area in areas)
    assert placed[0] == "conv_stem" and areas[0] == "LGN" and areas[-1] == "IT"


def test_curated_layers_include_every_published_layer():
    for card in load_cards(PROJECT_ROOT / "models").values():
        curated = {layer.name for layer in card.layers}
        for mapping in card.mappings:
            assert {mapping.layer_for(area) for area in AREAS} <= curated, card.id
