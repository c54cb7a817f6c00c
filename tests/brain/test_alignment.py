"""Layer ↔ area alignments: published maps read from the real cards, and the illustrative ladder."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brain import ALIGNMENT_AREAS, illustrative_alignment, published_mappings

MODELS = Path(__file__).resolve().parents[2] / "models"
IMAGE_PX = 224

# AlexNet theoretical RFs in pixels for a 224-px input (Araujo, Norris & Sim 2019 table).
ALEXNET_RF_PX = [
    ("features.0", 11),
    ("features.2", 19),
    ("features.3", 51),
    ("features.6", 99),
    ("features.10", 163),
    ("features.12", 195),
]


def card(model_id: str) -> dict[str, Any]:
    with (MODELS / f"{model_id}.toml").open("rb") as handle:
        return tomllib.load(handle)


def px_to_deg(px: float, fov_deg: float) -> float:
    # Brain-Score convention: the 224-px input spans fov_deg; a field cannot extend past the image.
    return min(px, IMAGE_PX) * fov_deg / IMAGE_PX


def alexnet_like(fov_deg: float = 8.0) -> list[tuple[str, float]]:
    return [(name, px_to_deg(px, fov_deg)) for name, px in ALEXNET_RF_PX]


# --- published mappings -------------------------------------------------------------------------------------


def test_alexnet_mapping_matches_the_committed_brain_score_map() -> None:
    (mapping,) = published_mappings(card("alexnet"))
    assert mapping.kind == "published"
    assert mapping.layers == {"V1": "features.2", "V2": "features.7", "V4": "features.7", "IT": "features.12"}
    assert mapping.url == "https://github.com/brain-score/vision"
    assert "Brain-Score" in mapping.source
    assert mapping.matches_loaded_weights is True
    assert [(s.layer, s.areas) for s in mapping.collapsed] == [("features.7", ("V2", "V4"))]
    assert mapping.out_of_order == ()
    assert mapping.monotonic is True
    assert mapping.distinct_layers == 3


def test_vgg16_collapses_v1_v2_and_v4_onto_pool3() -> None:
    (mapping,) = published_mappings(card("vgg16"))
    assert mapping.layers == {"V1": "features.16", "V2": "features.16", "V4": "features.16", "IT": "features.23"}
    assert [(s.layer, s.areas) for s in mapping.collapsed] == [("features.16", ("V1", "V2", "V4"))]
    assert mapping.monotonic is True
    assert mapping.distinct_layers == 2
    texts = [note.text for note in mapping.notes]
    assert any("V1, V2 and V4 all map to features.16 (pool3)" in text for text in texts)
    # V1 is caught in the collapse, so the image-size caveat (Miao & Tong 2024) is attached.
    assert any("Miao & Tong 2024" in note.source for note in mapping.notes)


def test_resnet50_v1_weights_map_runs_out_of_order() -> None:
    v1_weights, v2_weights = published_mappings(card("resnet50"))
    assert v1_weights.weights == "torchvision IMAGENET1K_V1"
    assert v1_weights.layers == {"V1": "layer2.3", "V2": "layer3.0", "V4": "layer2.3", "IT": "layer4.0"}
    assert v1_weights.monotonic is False
    assert [(i.upstream_area, i.downstream_area) for i in v1_weights.out_of_order] == [("V2", "V4")]
    assert [(s.layer, s.areas) for s in v1_weights.collapsed] == [("layer2.3", ("V1", "V4"))]
    assert v1_weights.positions["V4"] < v1_weights.positions["V2"]  # type: ignore[operator]
    assert v1_weights.matches_loaded_weights is True
    assert any("before V2's layer3.0" in note.text for note in v1_weights.notes)

    assert v2_weights.layers["V1"] == "layer1.0"
    assert v2_weights.monotonic is False
    assert v2_weights.matches_loaded_weights is False
    assert any("not for the weights this app loads" in note.text for note in v2_weights.notes)


@pytest.mark.parametrize("model_id", ["alexnet", "vgg16", "resnet50"])
def test_every_mapping_note_is_sourced_and_says_best_fit_is_not_anatomy(model_id: str) -> None:
    for mapping in published_mappings(card(model_id)):
        assert all(note.text.strip() and note.source.strip() for note in mapping.notes)
        assert any("not an anatomical match" in note.text for note in mapping.notes)
        assert any("seed" in note.text for note in mapping.notes)


@pytest.mark.parametrize("model_id", ["resnet18", "efficientnet_lite0"])
def test_cards_without_mappings_give_an_empty_list(model_id: str) -> None:
    assert published_mappings(card(model_id)) == []


def test_module_order_places_containers_after_their_children() -> None:
    named_modules = ["conv1", "layer1", "layer1.0", "layer1.1", "layer2", "layer2.0", "layer2.1", "fc"]
    data = {
        "id": "toy",
        "mappings": [
            {"weights": "w", "source": "a study", "V1": "layer1.0", "V2": "layer1", "V4": "layer2.0", "IT": "layer2"}
        ],
    }
    (mapping,) = published_mappings(data, module_order=named_modules)
    assert mapping.positions == {"V1": 2, "V2": 3, "V4": 5, "IT": 6}
    assert mapping.monotonic is True
    assert mapping.matches_loaded_weights is None


def test_unknown_layer_position_is_reported_not_guessed() -> None:
    data = {"id": "toy", "layers": [{"name": "a"}], "mappings": [{"source": "a study", "V1": "a", "IT": "zzz"}]}
    (mapping,) = published_mappings(data)
    assert mapping.positions == {"V1": 0, "IT": None}
    assert mapping.monotonic is None
    assert any("not known here" in note.text for note in mapping.notes)


def test_mapping_without_source_or_areas_is_rejected() -> None:
    with pytest.raises(ValueError, match="no source"):
        published_mappings({"id": "toy", "mappings": [{"V1": "a"}]})
    with pytest.raises(ValueError, match="names none of"):
        published_mappings({"id": "toy", "mappings": [{"source": "a study"}]})


def test_pydantic_cards_are_accepted() -> None:
    class FakeCard:
        def model_dump(self) -> dict[str, Any]:
            return card("vgg16")

    (mapping,) = published_mappings(FakeCard())
    assert mapping.layers["IT"] == "features.23"


# --- illustrative alignment ---------------------------------------------------------------------------------


def area_indices(result: Any) -> list[int]:
    return [ALIGNMENT_AREAS.index(placement.area) for placement in result.layers]


def assert_well_formed(result: Any, names: list[str]) -> None:
    assert result.kind == "illustrative"
    assert result.explanation.startswith("Illustrative only.")
    assert tuple(band.area for band in result.areas) == ALIGNMENT_AREAS
    indices = area_indices(result)
    assert indices == sorted(indices), "areas must follow layer order"
    # The bands partition the layers, in network order.
    assert [name for band in result.areas for name in band.layers] == names
    assert [p.layer for p in result.layers] == names
    assert result.areas[0].includes_input
    assert all(t.source.strip() for t in result.thresholds)


def test_alexnet_like_fields_at_8_degrees() -> None:
    layers = alexnet_like(8.0)
    result = illustrative_alignment(layers, 8.0)
    assert_well_formed(result, [name for name, _ in layers])
    ladder = {band.area: band.layers for band in result.areas}
    assert ladder == {
        "LGN": ("features.0",),  # 11 px ≈ 0.39°, under the smallest typical V1 field (0.5°)
        "V1": ("features.2", "features.3"),  # 0.68° and 1.82°: within 0.5–2°
        "V2": ("features.6",),  # 3.54°
        "V4": ("features.10", "features.12"),  # 5.82° and 6.96°: below the whole 8° image
        "IT": (),
    }
    assert result.areas[-1].note is not None and "IT" in result.areas[-1].note
    assert math.isclose(result.layers[1].rf_deg, 19 * 8 / 224)


def test_a_layer_covering_the_whole_image_stands_for_it() -> None:
    layers = [*alexnet_like(8.0), ("classifier.5", 8.0)]
    result = illustrative_alignment(layers, 8.0)
    assert_well_formed(result, [name for name, _ in layers])
    assert result.areas[-1].layers == ("classifier.5",)
    assert "whole 8° image" in result.explanation


def test_wider_field_of_view_moves_layers_up_the_ladder() -> None:
    narrow = illustrative_alignment(alexnet_like(8.0), 8.0)
    wide = illustrative_alignment(alexnet_like(20.0), 20.0)
    assert all(w >= n for w, n in zip(area_indices(wide), area_indices(narrow), strict=True))
    assert area_indices(wide) != area_indices(narrow)
    assert wide.areas[-1].min_deg == 10  # IT's own 10°, now reachable inside the image


def test_a_shrinking_field_keeps_the_earlier_area() -> None:
    result = illustrative_alignment([("a", 1.0), ("b", 3.0), ("c", 0.2), ("d", 9.0)], 8.0)
    assert [p.area for p in result.layers] == ["V1", "V2", "V2", "IT"]
    assert result.layers[2].area_by_size == "LGN"
    assert any("c has a smaller field" in note for note in result.notes)


def test_global_fields_and_empty_lists_are_handled() -> None:
    result = illustrative_alignment([("stem", 0.1), ("head", math.inf)], 8.0)
    assert [p.area for p in result.layers] == ["LGN", "IT"]
    empty = illustrative_alignment([], 8.0)
    assert all(band.layers == () for band in empty.areas)


@pytest.mark.parametrize(
    ("layers", "fov"),
    [
        ([("a", 1.0)], 0.0),
        ([("a", 1.0)], -8.0),
        ([("a", -1.0)], 8.0),
        ([("a", math.nan)], 8.0),
        ([("a", 1.0), ("a", 2.0)], 8.0),
    ],
)
def test_invalid_inputs_are_rejected(layers: list[tuple[str, float]], fov: float) -> None:
    with pytest.raises(ValueError):
        illustrative_alignment(layers, fov)


@given(
    fields=st.lists(
        st.one_of(st.floats(min_value=0.0, max_value=100.0), st.just(math.inf)),
        max_size=12,
    ),
    fov=st.floats(min_value=0.1, max_value=60.0),
)
def test_illustrative_alignment_is_always_monotonic(fields: list[float], fov: float) -> None:
    layers = [(f"layer{i}", rf) for i, rf in enumerate(fields)]
    result = illustrative_alignment(layers, fov)
    assert_well_formed(result, [name for name, _ in layers])


@given(
    pixels=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=10), fov=st.sampled_from([4, 8, 12])
)
def test_growing_fields_never_hold_a_layer_back(pixels: list[int], fov: float) -> None:
    # Theoretical RFs only grow with depth, so the size rule alone is already monotonic.
    layers = [(f"layer{i}", px_to_deg(px, fov)) for i, px in enumerate(sorted(pixels))]
    result = illustrative_alignment(layers, fov)
    assert all(p.area == p.area_by_size for p in result.layers)
    assert not any("smaller field" in note for note in result.notes)
