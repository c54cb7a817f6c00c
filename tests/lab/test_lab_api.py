"""The lab's endpoints through the app: jobs, receptive fields, Grad-CAM, comparisons, and their errors."""

from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import jpeg

TUNING = "/api/v1/experiments/orientation-tuning"
SMALL_RUN = {"layers": ["blocks.0"], "spatial_frequencies": [32, 56], "phases": 2}


def wait_for(client: TestClient, url: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] in ("done", "cancelled", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} did not finish: {body}")


def assert_svg(response) -> ET.Element:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"] == "default-src 'none'"
    root = ET.fromstring(response.text)  # well-formed XML
    assert root.tag.endswith("svg") and "<script" not in response.text and "style=" not in response.text
    assert root.find("{http://www.w3.org/2000/svg}title") is not None
    return root


def png_size(response) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).size


# Orientation tuning ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(client: TestClient) -> dict:
    response = client.post(TUNING, json=SMALL_RUN)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == response.json()["url"]
    assert response.json()["status"] in ("queued", "running", "done")
    return wait_for(client, response.headers["location"])


def test_an_orientation_run_reports_tuning_with_definitions_and_sources(finished_run: dict) -> None:
    assert finished_run["status"] == "done" and finished_run["progress"] == 1.0
    result = finished_run["result"]
    assert result["model"] == "efficientnet_lite0" and result["trained"] is True
    stimuli = result["stimuli"]
    assert stimuli["orientations_deg"] == [15.0 * k for k in range(12)]
    assert stimuli["count"] == 12 * 2 * 2 + 1 and stimuli["cycles_per_degree"] == [4.0, 7.0]
    assert {"osi", "one_minus_cv", "response", "selective"} <= set(result["definitions"])
    assert "R_orth" in result["definitions"]["osi"] and "circular variance" in result["definitions"]["one_minus_cv"]
    (layer,) = result["layers"]
    assert layer["name"] == "blocks.0" and layer["channels"] == 16
    assert sum(layer["preferred_orientation_counts"]) == layer["responsive"]
    assert layer["selective_share"] >= 0.5  # measured 0.69 with this small stimulus set
    sources = " ".join(fact["source"] for fact in result["brain"])
    assert "Hubel, Wiesel & LeVay 1977" in sources and "Jones & Palmer 1987" in sources
    assert next(f for f in result["brain"] if f["area"] == "LGN")["refs"] == ["hubel1977"]


def test_tuning_channels_and_charts(client: TestClient, finished_run: dict) -> None:
    result = finished_run["result"]
    layer = result["layers"][0]
    channels = client.get(layer["channels_url"]).json()
    assert channels["count"] == 16 and len(channels["data"][0]["curve"]) == 12
    responsive = [c for c in channels["data"] if c["responsive"]]
    assert all(0 <= c["osi"] <= 1 and 0 <= c["one_minus_cv"] <= 1 for c in responsive)
    assert all(c["preferred_deg"] in channels["orientations_deg"] for c in responsive)
    assert_svg(client.get(result["osi_plot_url"]))
    chart = assert_svg(client.get(layer["curves_url"] + "?count=8"))
    assert len(chart.findall("{http://www.w3.org/2000/svg}polygon")) == 8


def test_a_running_experiment_can_be_cancelled_then_forgotten(client: TestClient) -> None:
    response = client.post(TUNING, json={"orientation_step_deg": 5, "phases": 8, "spatial_frequencies": [8, 16, 32]})
    assert response.status_code == 202
    url = response.headers["location"]
    cancel = client.delete(url)
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    body = wait_for(client, url, timeout=60)
    assert body["status"] == "cancelled" and body["result"] is None and body["progress"] < 1
    assert client.get(url + "/osi.svg").status_code == 409
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    ("payload", "status", "phrase"),
    [
        ({"orientation_step_deg": 7}, 422, "must divide 90"),
        ({"orientation_step_deg": 2.5, "phases": 8, "spatial_frequencies": [1, 2, 3]}, 422, "at most 1200"),
        ({"spatial_frequencies": [200]}, 422, "cannot be drawn"),
        ({"spatial_frequencies": [20], "frequency_unit": "cycles_per_degree"}, 422, "cannot be drawn"),
        ({"layers": ["blocks.99"]}, 404, "unknown layer 'blocks.99'"),
        ({"model": "nope"}, 404, "unknown model 'nope'"),
        ({"model": "alexnet"}, 409, "alexnet-owt-7be5be79.pth"),  # no weights installed in this app
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_bad_experiments_are_refused_before_queueing(
    client: TestClient, payload: dict, status: int, phrase: str
) -> None:
    response = client.post(TUNING, json=payload)
    assert response.status_code == status and phrase in response.json()["detail"], response.text


def test_unknown_experiments(client: TestClient) -> None:
    response = client.get("/api/v1/experiments/0123")
    assert response.status_code == 404 and "never existed" in response.json()["detail"]
    assert client.delete("/api/v1/experiments/0123").status_code == 404
    assert client.get("/api/v1/experiments/0123/layers/blocks.0").status_code == 404


# First-layer filters --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filters(client: TestClient) -> dict:
    response = client.get("/api/v1/models/efficientnet_lite0/first-layer-filters", params={"layers": "blocks.0"})
    assert response.status_code == 200, response.text
    return response.json()


def test_first_layer_filters_and_gabor_fits(client: TestClient, filters: dict) -> None:
    kernels = filters["kernels"]
    assert kernels["layer"] == "conv_stem" and kernels["shape"] == [32, 3, 3, 3]
    image = client.get(kernels["image_url"])
    assert png_size(image) == (6 * (3 * 16 + 2) + 2,) * 2
    assert client.get(kernels["image_url"], headers={"If-None-Match": image.headers["etag"]}).status_code == 304
    (layer,) = filters["layers"]
    assert (layer["layer"], layer["rf_px"], layer["patch_px"], layer["channels"]) == ("blocks.0", 7, 11, 16)
    assert layer["share_well_fit"] >= 0.8 and layer["control_share"] <= 0.3
    assert filters["r2_threshold"] == 0.5
    assert sum(c["well_fit"] for c in layer["data"]) == round(layer["share_well_fit"] * 16)
    assert all(0 <= c["fit"]["orientation_deg"] < 180 for c in layer["data"])
    assert png_size(client.get(layer["fields_url"])) == (4 * (11 * 4 + 2) + 2,) * 2
    assert png_size(client.get(layer["fits_url"]))[0] > png_size(client.get(layer["fields_url"]))[0]
    assert_svg(client.get(layer["r2_plot_url"]))
    assert any("Jones & Palmer 1987" in fact["source"] for fact in filters["brain"])


def test_default_early_layers_and_errors(client: TestClient) -> None:
    body = client.get("/api/v1/models/efficientnet_lite0/first-layer-filters").json()
    assert [layer["layer"] for layer in body["layers"]] == ["blocks.0", "blocks.1"]
    missing = client.get("/api/v1/models/efficientnet_lite0/first-layer-filters", params={"layers": "nope"})
    assert missing.status_code == 404 and "unknown layer 'nope'" in missing.json()["detail"]
    assert client.get("/api/v1/models/nope/first-layer-filters").status_code == 404
    assert client.get("/api/v1/models/alexnet/first-layer-filters").status_code == 409  # no weights here


@pytest.mark.slow
def test_alexnet_11px_kernels_with_random_weights(untrained_client: TestClient) -> None:
    response = untrained_client.get("/api/v1/models/alexnet/first-layer-filters", params={"layers": "features.0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trained"] is False and body["kernels"]["shape"] == [64, 3, 11, 11]
    assert body["layers"][0]["rf_px"] == 11 and body["layers"][0]["share_well_fit"] < 0.2


# Grad-CAM -------------------------------------------------------------------------------------------------------


def test_gradcam_for_the_top_class(client: TestClient, coffee_analysis: dict) -> None:
    url = f"/api/v1/analyses/{coffee_analysis['id']}/gradcam"
    body = client.get(url).json()
    assert body["class_label"] == "espresso" and body["class_index"] == coffee_analysis["predictions"][0]["index"]
    assert body["layer"] == "bn2" and body["map_shape"] == [7, 7] and len(body["heatmap"]) == 7
    assert 0 <= body["centre_of_mass_px"][0] < 140  # the cup fills the upper part of the crop
    assert png_size(client.get(body["overlay_url"])) == (224, 224)
    array = np.load(io.BytesIO(client.get(body["npy_url"]).content), allow_pickle=False)
    assert array.shape == (224, 224) and array.dtype == np.float32 and array.min() >= 0


def test_gradcam_for_another_class_and_layer(client: TestClient, coffee_analysis: dict) -> None:
    url = f"/api/v1/analyses/{coffee_analysis['id']}/gradcam"
    body = client.get(url, params={"class_index": 968, "layer": "blocks.5"}).json()
    assert (body["class_label"], body["layer"], body["map_shape"]) == ("cup", "blocks.5", [7, 7])
    assert body["overlay_url"].endswith("gradcam.png?layer=blocks.5&class_index=968")


@pytest.mark.parametrize(
    ("params", "status", "phrase"),
    [
        ({"class_index": 1000}, 422, "between 0 and 999"),
        ({"class_index": -1}, 422, "class_index"),
        ({"layer": "nope"}, 404, "unknown layer 'nope'"),
    ],
)
def test_gradcam_errors(client: TestClient, coffee_analysis: dict, params: dict, status: int, phrase: str) -> None:
    response = client.get(f"/api/v1/analyses/{coffee_analysis['id']}/gradcam", params=params)
    assert response.status_code == status and phrase in response.json()["detail"], response.text
    assert client.get("/api/v1/analyses/0123/gradcam").status_code == 404


# Comparisons ----------------------------------------------------------------------------------------------------


def test_an_image_compared_with_itself_is_identical_at_every_layer(client: TestClient) -> None:
    photo = jpeg("chelsea")
    response = client.post(
        "/api/v1/comparisons",
        files={"file_a": ("a.jpg", photo, "image/jpeg"), "file_b": ("b.jpg", photo, "image/jpeg")},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == body["url"] and body["a"]["id"] == body["b"]["id"]
    assert len(body["layers"]) == 10
    assert all(layer["cosine"] == pytest.approx(1.0, abs=1e-5) for layer in body["layers"])
    assert all(layer["pearson"] == pytest.approx(1.0, abs=1e-5) for layer in body["layers"])
    assert {"Yamins et al. 2014, PNAS 111:8619", "DiCarlo, Zoccolan & Rust 2012, Neuron 73:415"} <= {
        fact["source"] for fact in body["brain"]
    }


def test_comparison_by_analysis_ids(client: TestClient, coffee_analysis: dict) -> None:
    cat = client.post("/api/v1/analyses", files={"file": ("cat.jpg", jpeg("chelsea"), "image/jpeg")}).json()
    response = client.post("/api/v1/comparisons", data={"analysis_a": cat["id"], "analysis_b": coffee_analysis["id"]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["late_cosine"] < body["early_cosine"] and body["late_cosine"] < 0.2
    assert body["a"]["atlas_urls"]["blocks.0"] == f"/api/v1/analyses/{cat['id']}/layers/blocks.0/atlas.png"
    assert client.get(body["a"]["atlas_urls"]["blocks.0"]).status_code == 200
    assert client.get(body["url"]).json() == body
    chart = assert_svg(client.get(body["plot_url"]))
    assert len(chart.findall("{http://www.w3.org/2000/svg}polyline")) == 2


@pytest.mark.parametrize(
    ("data", "files", "status", "phrase"),
    [
        ({}, None, 422, "give exactly one of file_a"),
        ({"analysis_a": "0123", "analysis_b": "0123"}, None, 404, "no analysis '0123'"),
        ({"analysis_b": "x"}, {"file_a": ("a.txt", b"not an image", "text/plain")}, 415, "not an image"),
    ],
)
def test_comparison_errors(client: TestClient, data: dict, files: dict | None, status: int, phrase: str) -> None:
    response = client.post("/api/v1/comparisons", data=data, files=files)
    assert response.status_code == status and phrase in response.json()["detail"], response.text


def test_unknown_comparisons(client: TestClient) -> None:
    assert client.get(f"/api/v1/comparisons/{'a' * 32}-{'b' * 32}").status_code == 404
    assert client.get("/api/v1/comparisons/not-an-id").status_code == 422


def test_every_lab_endpoint_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/experiments/orientation-tuning",
        "/api/v1/experiments/{job_id}",
        "/api/v1/experiments/{job_id}/osi.svg",
        "/api/v1/experiments/{job_id}/layers/{layer}",
        "/api/v1/models/{model_id}/first-layer-filters",
        "/api/v1/models/{model_id}/first-layer-filters/{layer}/fields.png",
        "/api/v1/analyses/{analysis_id}/gradcam",
        "/api/v1/analyses/{analysis_id}/gradcam.png",
        "/api/v1/comparisons",
        "/api/v1/comparisons/{comparison_id}/similarity.svg",
    ):
        assert path in paths, path
    assert set(paths["/api/v1/experiments/{job_id}"]) == {"get", "delete"}
