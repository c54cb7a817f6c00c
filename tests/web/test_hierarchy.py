"""The hierarchy adapter: stages in ventral-stream order, every layer placed once, brain data only from app.brain."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.brain import AREA_IDS
from app.web import hierarchy
from app.web.hierarchy import UNASSIGNED, build_hierarchy, degrees
from tests.conftest import jpeg


def test_rows_follow_the_ventral_stream_and_place_every_layer_once(client: TestClient, coffee_analysis: dict) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    analysis = runtime.analyser.get(coffee_analysis["id"])
    view = build_hierarchy(runtime, analysis)
    assert view.aligned
    assert [row.area_id for row in view.rows] == list(AREA_IDS)
    placed = [layer.layer.name for row in view.rows for layer in row.layers]
    assert placed == [layer["name"] for layer in coffee_analysis["layers"]]  # each once, in network order
    first, *_ = view.rows
    assert first.includes_input and first.area is not None and first.area.id == "LGN"
    pit = next(row for row in view.rows if row.area_id == "PIT")
    assert not pit.laddered and pit.layers == ()
    assert all(layer.rf is not None and layer.rf_deg is not None for layer in view.layers)
    fields = [layer.rf.rf_px for layer in view.layers if layer.rf]
    assert fields == sorted(fields)  # receptive fields only grow along this network
    assert view.explanation and view.explanation.startswith("Illustrative only.")
    assert view.field_of_view is not None and view.field_of_view.source


def test_without_receptive_fields_every_layer_is_listed_unassigned(
    client: TestClient, coffee_analysis: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> dict:
        raise RuntimeError("no geometry today")

    monkeypatch.setattr(hierarchy, "layer_receptive_fields", broken)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    view = build_hierarchy(runtime, runtime.analyser.get(coffee_analysis["id"]))
    assert not view.aligned
    (row,) = view.rows
    assert row.area_id == UNASSIGNED and row.area is None
    assert [layer.layer.name for layer in row.layers] == [layer["name"] for layer in coffee_analysis["layers"]]


def test_published_maps_show_beside_their_areas(untrained_client: TestClient) -> None:
    response = untrained_client.post(
        "/api/v1/analyses", files={"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")}, data={"model": "alexnet"}
    )
    assert response.status_code in (200, 201), response.text
    runtime = untrained_client.app.state.runtime  # type: ignore[attr-defined]
    view = build_hierarchy(runtime, runtime.analyser.get(response.json()["id"]))
    picks = {row.area_id: [pick.layer for pick in row.picks] for row in view.rows}
    assert picks == {
        "LGN": [],
        "V1": ["features.2"],
        "V2": ["features.7"],
        "V4": ["features.7"],
        "PIT": [],
        "IT": ["features.12"],
    }
    shared = next(layer for layer in view.layers if layer.layer.name == "features.7")
    assert shared.published_areas == ("V2", "V4")

    page = untrained_client.get(f"/analyses/{response.json()['id']}").text
    assert "Published map:" in page and "Brain-Score" in page
    assert "ran with random weights" in page  # an untrained network says so


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.107, "0.11°"), (0.68, "0.68°"), (2.39, "2.39°"), (8.0, "8°"), (None, "—"), (float("inf"), "∞")],
)
def test_degrees_for_display(value: float | None, text: str) -> None:
    assert degrees(value) == text
