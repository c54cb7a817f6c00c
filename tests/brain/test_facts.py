"""The brain facts: every served fact is sourced, unverified numbers stay out, bad data fails at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.brain import (
    AREA_IDS,
    KnowledgeError,
    area_by_id,
    how_to_read,
    load_areas,
    load_citations,
    load_comparisons,
    load_knowledge,
    numbers_in_text,
)

AREAS_TOML = Path(__file__).resolve().parents[2] / "app" / "brain" / "areas.toml"

# The only DOI and URL the science notes and the model cards give; any other would be invented.
KNOWN_DOIS = {"10.23915/distill.00021"}
KNOWN_URLS = {"https://github.com/brain-score/vision"}


def test_areas_come_in_processing_order_with_display_names() -> None:
    areas = load_areas()
    assert tuple(area.id for area in areas) == AREA_IDS == ("LGN", "V1", "V2", "V4", "PIT", "IT")
    assert areas[0].name == "Retina / LGN"
    assert "TEO" in area_by_id("PIT").name
    assert all(area.summary and area.facts for area in areas)


def test_every_served_fact_has_a_source_and_known_citations() -> None:
    knowledge = load_knowledge()
    citations = load_citations()
    facts = knowledge.all_facts()
    assert len(facts) > 40
    for fact in facts:
        assert fact.source.strip(), fact.text
        assert fact.refs, fact.text
        assert all(ref in citations for ref in fact.refs), fact.refs
        assert fact.evidence in ("verified", "derived")
        if fact.evidence == "derived":
            assert fact.method and fact.method.strip(), fact.text


def test_every_number_in_a_text_is_a_sourced_field() -> None:
    for fact in load_knowledge().all_facts():
        allowed = [form for v in fact.numbers.values() for form in (v, v * 100, v / 1e6, v / 1e9)]
        for number in numbers_in_text(fact.text):
            assert any(abs(number - form) <= 1e-9 * max(1.0, abs(form)) for form in allowed), (number, fact.text)
    for area in load_areas():
        assert numbers_in_text(area.summary) == [], area.summary


def test_numbers_in_text_skips_names() -> None:
    assert numbers_in_text("V1 at 0.5–1°, features.16 and hV4; 650,000 neurons, 86%") == [0.5, 1.0, 650000.0, 86.0]


def test_no_absolute_lgn_field_size() -> None:
    for fact in area_by_id("LGN").facts:
        assert not any(key.startswith("rf_deg") or "diameter" in key for key in fact.numbers), fact.numbers
    (rf_fact,) = area_by_id("LGN").facts_of("rf_size")
    assert set(rf_fact.numbers) == {"m_to_p_centre_ratio"}


def test_no_macaque_v4_size_slope() -> None:
    for fact in area_by_id("V4").facts:
        if any("scaling" in key for key in fact.numbers):
            assert fact.species == "human", fact.text
            assert "human" in fact.text and "Kay" in fact.source


def test_no_pit_latency_and_no_unsourced_system_numbers() -> None:
    assert area_by_id("PIT").facts_of("latency") == ()
    texts = " ".join(item.text for item in load_knowledge().all_facts())
    # Numbers the science notes give without a source or method: GPU power, neocortical synapse count.
    assert "H100" not in texts
    assert "synapse" not in texts.lower()


def test_key_area_figures_match_the_science_notes() -> None:
    (v1_rf,) = area_by_id("V1").facts_of("rf_size")
    assert v1_rf.numbers["rf_deg_median_min"] == 0.5 and v1_rf.numbers["rf_deg_median_max"] == 1.0
    assert v1_rf.numbers["rf_deg_max"] == 2.0 and "Cavanaugh" in v1_rf.source
    latencies = {area.id: area.facts_of("latency")[0].numbers.get("latency_ms") for area in load_areas()[1:4]}
    assert latencies == {"V1": 66, "V2": 84, "V4": 104}
    it_rf = area_by_id("IT").facts_of("rf_size")[0]
    assert it_rf.numbers["rf_deg_min"] == 10 and "Gross" in it_rf.source
    surfaces = {area.id: area.facts_of("surface")[0].numbers for area in load_areas()[1:]}
    assert surfaces["V1"]["surface_mm2"] == 1485 and surfaces["IT"]["surface_mm2_ait"] == 185


def test_general_comparisons_cover_the_sections_the_app_shows() -> None:
    by_id = {item.id: item for item in load_comparisons()}
    for expected in ("field_of_view", "pixels_per_degree", "sparsity", "energy", "brain_neurons", "one_pass"):
        assert expected in by_id
    assert by_id["field_of_view"].numbers == {"fov_deg": 8, "image_px": 224}
    assert by_id["pixels_per_degree"].numbers["px_per_deg"] == 28
    assert by_id["sparsity"].network_measure == "post_relu_zero_fraction"


def test_citations_carry_no_invented_doi_or_url() -> None:
    citations = load_citations().values()
    assert {c.doi for c in citations if c.doi} <= KNOWN_DOIS
    assert {c.url for c in citations if c.url} <= KNOWN_URLS


def test_area_lookup_is_case_insensitive_and_names_known_ids() -> None:
    assert area_by_id("v4").id == "V4"
    with pytest.raises(KeyError, match="known areas: LGN, V1, V2, V4, PIT, IT"):
        area_by_id("MT")


def test_knowledge_serialises_to_json() -> None:
    dumped = load_knowledge().model_dump(mode="json")
    assert json.loads(json.dumps(dumped))["areas"][1]["facts"][0]["numbers"]["rf_deg_max"] == 2.0


@pytest.mark.parametrize(
    ("original", "broken", "message"),
    [
        ('source = "Croner & Kaplan 1995, Vision Res 35:7"', 'source = "  "', "source"),
        ('method = "Mean and range of the V1 onset', 'comment = "Mean and range of the V1 onset', "comment"),
        ('refs = ["croner1995"]', 'refs = ["nobody2001"]', "unknown citation"),
        ('refs = ["croner1995"]', "refs = []", "refs"),
        ("latency_ms = 66\n", "latency_ms = 67\n", "the number 66 in"),
    ],
)
def test_loader_rejects_unsourced_data(tmp_path: Path, original: str, broken: str, message: str) -> None:
    text = AREAS_TOML.read_text(encoding="utf-8")
    assert original in text
    bad = tmp_path / "areas.toml"
    bad.write_text(text.replace(original, broken, 1), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(bad)


def test_derived_fact_without_method_is_rejected(tmp_path: Path) -> None:
    text = AREAS_TOML.read_text(encoding="utf-8")
    original = 'method = "Means of the onset latencies recorded by Schmolesky et al. (1998) for each cell class."\n'
    assert original in text
    bad = tmp_path / "areas.toml"
    bad.write_text(text.replace(original, "", 1), encoding="utf-8")
    with pytest.raises(KnowledgeError, match="needs a method"):
        load_knowledge(bad)


def test_missing_file_is_a_knowledge_error(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="cannot read"):
        load_knowledge(tmp_path / "absent.toml")


def test_how_to_read_states_the_limits_with_sources() -> None:
    text = how_to_read()
    words = len(text.split())
    assert 300 <= words <= 520
    for phrase in ("8°", "Brain-Score", "best fits", "feedforward", "eccentricity", "theoretical"):
        assert phrase in text
    for source in ("Schrimpf", "Miao & Tong 2024", "Araujo", "Luo", "Freeman", "Schmolesky", "DiCarlo"):
        assert source in text
