"""Layer ↔ area alignments: the published best-fit maps from model cards, and an illustrative ladder by RF size.

Two different things, kept apart on purpose:

- ``published_mappings`` reports what a study committed for a network (Brain-Score's per-area best-fit layers)
  and says plainly where those picks collapse several areas onto one layer or run against the layer order.
- ``illustrative_alignment`` places layers next to areas by comparing theoretical receptive-field sizes (in
  degrees) with biological field sizes. It is always monotonic and always labelled ``kind = "illustrative"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.brain.knowledge import Knowledge, Threshold, load_knowledge

__all__ = [
    "ALIGNMENT_AREAS",
    "MAPPED_AREAS",
    "AreaBand",
    "IllustrativeAlignment",
    "Inversion",
    "LayerPlacement",
    "Note",
    "PublishedMapping",
    "SharedLayer",
    "illustrative_alignment",
    "published_mappings",
]

MAPPED_AREAS: tuple[str, ...] = ("V1", "V2", "V4", "IT")
"""Areas a published mapping names, in ventral-stream order."""

ALIGNMENT_AREAS: tuple[str, ...] = ("LGN", "V1", "V2", "V4", "IT")
"""Areas of the illustrative ladder, in ventral-stream order (PIT is shown with the facts, not laddered)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Note(_Frozen):
    """One plain-language caveat with where it comes from."""

    text: str
    source: str
    refs: tuple[str, ...] = ()


class SharedLayer(_Frozen):
    """Several areas mapped onto one layer."""

    layer: str
    areas: tuple[str, ...]


class Inversion(_Frozen):
    """An area mapped to a layer that the network computes *after* the layer of a later area."""

    upstream_area: str = Field(description="The area that comes first in the ventral stream, e.g. V2.")
    downstream_area: str = Field(description="The area that comes later in the ventral stream, e.g. V4.")
    upstream_layer: str
    downstream_layer: str


class PublishedMapping(_Frozen):
    """A published layer → area map from a model card, with an honest reading of its shape."""

    kind: Literal["published"] = "published"
    weights: str = Field(description="The weights the map was fitted for, as the card states them.")
    source: str
    url: str | None = None
    layers: dict[str, str] = Field(description="Area → layer name, in ventral-stream order.")
    positions: dict[str, int | None] = Field(description="Area → index of its layer in network order (None: unknown).")
    matches_loaded_weights: bool | None = Field(
        None, description="Whether the map was fitted for the weights the card loads (None: cannot tell)."
    )
    distinct_layers: int
    collapsed: tuple[SharedLayer, ...] = Field(description="Layers that carry more than one area.")
    out_of_order: tuple[Inversion, ...] = Field(description="Area pairs whose layers run against the network order.")
    monotonic: bool | None = Field(description="True if no pair runs out of order (None: some position unknown).")
    notes: tuple[Note, ...]


class LayerPlacement(_Frozen):
    """Where one layer sits on the illustrative ladder."""

    layer: str
    rf_deg: float
    area: str = Field(description="The area shown beside this layer.")
    area_by_size: str = Field(description="The area its field size alone points to (may be earlier than `area`).")


class AreaBand(_Frozen):
    """One rung of the illustrative ladder: an area, its size band at this field of view, and its layers."""

    area: str
    name: str
    min_deg: float | None = Field(description="Fields at least this large (None: no lower bound).")
    max_deg: float | None = Field(description="Fields up to this size (None: no upper bound).")
    layers: tuple[str, ...]
    includes_input: bool = Field(False, description="True for Retina / LGN, which also stands for the input image.")
    note: str | None = None


class IllustrativeAlignment(_Frozen):
    """A monotonic, size-based ladder of layers beside areas. Not a measured correspondence."""

    kind: Literal["illustrative"] = "illustrative"
    fov_deg: float
    areas: tuple[AreaBand, ...]
    layers: tuple[LayerPlacement, ...]
    explanation: str
    notes: tuple[str, ...]
    thresholds: tuple[Threshold, ...] = Field(description="The sourced size boundaries the ladder used.")


# --- published mappings -------------------------------------------------------------------------------------


def published_mappings(
    card: Mapping[str, Any] | Any, module_order: Sequence[str] | None = None
) -> list[PublishedMapping]:
    """Read a card's ``[[mappings]]`` and analyse each one; a card without mappings gives ``[]``.

    ``card`` is the parsed TOML (a dict) or any pydantic model of it. Layer order comes from ``module_order``
    (e.g. the names of ``model.named_modules()``) when given, else from the card's curated ``[[layers]]``;
    a container such as ``layer3`` is placed after its last sub-module, where its output is produced.
    Raises ``ValueError`` if a mapping names no area or has no source.
    """
    data: Mapping[str, Any] = card.model_dump() if hasattr(card, "model_dump") else card
    entries = data.get("mappings") or ()
    if not entries:
        return []
    card_id = str(data.get("id", "?"))
    labels = {str(layer["name"]): str(layer.get("label", "")) for layer in data.get("layers") or ()}
    order = list(module_order) if module_order is not None else list(labels)
    loaded_enum = (data.get("weights") or {}).get("enum")
    knowledge = load_knowledge()
    return [
        _analyse_mapping(card_id, index, entry, order, labels, loaded_enum, knowledge)
        for index, entry in enumerate(entries, start=1)
    ]


def _position(layer: str, order: Sequence[str]) -> int | None:
    # A container's output is produced when its last child finishes, so take the last matching entry.
    hits = [index for index, name in enumerate(order) if name == layer or name.startswith(layer + ".")]
    return max(hits) if hits else None


def _weights_match(mapping_weights: str, loaded_enum: object) -> bool | None:
    if not isinstance(loaded_enum, str) or not loaded_enum:
        return None
    # "ResNet50_Weights.IMAGENET1K_V1" vs "torchvision IMAGENET1K_V1": compare the weight tag itself.
    tag = loaded_enum.rsplit(".", 1)[-1]
    return tag in mapping_weights.replace(".", " ").split()


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _analyse_mapping(
    card_id: str,
    index: int,
    entry: Mapping[str, Any],
    order: Sequence[str],
    labels: Mapping[str, str],
    loaded_enum: object,
    knowledge: Knowledge,
) -> PublishedMapping:
    layers = {area: str(entry[area]) for area in MAPPED_AREAS if entry.get(area)}
    source = str(entry.get("source") or "").strip()
    if not layers:
        raise ValueError(f"card {card_id!r}: mapping {index} names none of {', '.join(MAPPED_AREAS)}")
    if not source:
        raise ValueError(f"card {card_id!r}: mapping {index} has no source")
    weights = str(entry.get("weights") or "unspecified weights")
    url = entry.get("url") or None
    positions = {area: _position(layer, order) for area, layer in layers.items()}

    def shown(layer: str) -> str:
        label = labels.get(layer)
        return f"{layer} ({label})" if label else layer

    by_layer: dict[str, list[str]] = {}
    for area, layer in layers.items():
        by_layer.setdefault(layer, []).append(area)
    collapsed = tuple(
        SharedLayer(layer=layer, areas=tuple(areas)) for layer, areas in by_layer.items() if len(areas) > 1
    )

    areas = list(layers)
    inversions: list[Inversion] = []
    for i, upstream in enumerate(areas):
        for downstream in areas[i + 1 :]:
            up, down = positions[upstream], positions[downstream]
            if up is not None and down is not None and up > down:
                inversions.append(
                    Inversion(
                        upstream_area=upstream,
                        downstream_area=downstream,
                        upstream_layer=layers[upstream],
                        downstream_layer=layers[downstream],
                    )
                )
    unplaced = [layers[area] for area in areas if positions[area] is None]
    monotonic = None if unplaced else not inversions

    card_refs: tuple[str, ...] = ("brainscore_vision",) if "brain-score" in str(url).lower() else ()

    def card_note(text: str) -> Note:
        # Notes about this map's shape cite the map itself.
        return Note(text=text, source=source, refs=card_refs)

    notes: list[Note] = []
    for shared in collapsed:
        notes.append(
            card_note(
                f"{_join(shared.areas)} {'both' if len(shared.areas) == 2 else 'all'} map to {shown(shared.layer)}. "
                "That one layer gave the best fit for each of them; it does not mean these areas are alike, only "
                "that the fit did not tell them apart in this network."
            )
        )
    for inversion in inversions:
        notes.append(
            card_note(
                f"{inversion.downstream_area} maps to {shown(inversion.downstream_layer)}, which the network "
                f"computes before {inversion.upstream_area}'s {shown(inversion.upstream_layer)}, although "
                f"{inversion.downstream_area} comes after {inversion.upstream_area} in the ventral stream."
            )
        )
    if unplaced:
        notes.append(
            card_note(f"Where {_join(unplaced)} sits in the network is not known here, so the order was not checked.")
        )
    matches = _weights_match(weights, loaded_enum)
    if matches is False:
        notes.append(
            card_note(f"This map was fitted for {weights}, not for the weights this app loads ({loaded_enum}).")
        )

    # Why such shapes happen: each pick is a separate best fit; for V1 the image size matters; picks vary by seed.
    v1_involved = any("V1" in shared.areas for shared in collapsed) or any(
        "V1" in (inv.upstream_area, inv.downstream_area) for inv in inversions
    )
    wanted = ["best_fit", *(["image_size"] if v1_involved else []), "seeds", "trend"]
    for note_id in wanted:
        note = knowledge.mapping_note(note_id)
        notes.append(Note(text=note.text, source=note.source, refs=note.refs))

    return PublishedMapping(
        weights=weights,
        source=source,
        url=str(url) if url else None,
        layers=layers,
        positions=positions,
        matches_loaded_weights=matches,
        distinct_layers=len(by_layer),
        collapsed=collapsed,
        out_of_order=tuple(inversions),
        monotonic=monotonic,
        notes=tuple(notes),
    )


# --- illustrative alignment ---------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _short_cite(source: str) -> str:
    # "Cavanaugh, Bair & Movshon 2002, J Neurophysiol 88:2530" -> "Cavanaugh, Bair & Movshon 2002"
    match = re.match(r"^(.*?\b(?:19|20)\d{2})\b", source)
    return match.group(1) if match else source


def _it_min(fov_deg: float, knowledge: Knowledge) -> float:
    it_min = knowledge.threshold("it_min_deg").deg
    v1_max = knowledge.threshold("v1_max_deg").deg
    # An image narrower than IT's 10° caps every field at the image, so "covers the whole image" stands in for
    # "> 10°". Below the largest V1 field that stand-in would call a V1-sized field IT, so it is dropped there.
    return min(it_min, fov_deg) if fov_deg > v1_max else it_min


def _bands(fov_deg: float, knowledge: Knowledge) -> list[tuple[float | None, float | None]]:
    """Size band (low, high) in degrees for LGN, V1, V2, V4 and IT at this field of view."""
    v1_min = knowledge.threshold("v1_min_deg").deg
    v1_max = knowledge.threshold("v1_max_deg").deg
    it_min = _it_min(fov_deg, knowledge)
    # V2 and V4 both lie between V1 and IT, V4 above V2, but the sources give no absolute near-fovea sizes
    # for them, so split the gap at its geometric midpoint: the split adds no number of its own.
    split = math.sqrt(v1_max * it_min)
    return [(None, v1_min), (v1_min, v1_max), (v1_max, split), (split, it_min), (it_min, None)]


def _band_of(rf_deg: float, bands: Sequence[tuple[float | None, float | None]]) -> int:
    """Index into ALIGNMENT_AREAS. LGN: < v1_min; V1: up to v1_max; V2: up to the split; IT: >= its edge."""
    it_edge = bands[4][0] or math.inf
    if rf_deg >= it_edge or math.isclose(rf_deg, it_edge, rel_tol=1e-9):
        return 4
    for index in range(4):
        high = bands[index][1]
        # LGN's upper edge is exclusive (0.5° is already V1); V1, V2 include theirs; V4 runs up to IT.
        if high is not None and (rf_deg < high or (index in (1, 2) and rf_deg == high)):
            return index
    return 3


def illustrative_alignment(layers: Sequence[tuple[str, float]], fov_deg: float) -> IllustrativeAlignment:
    """Place curated layers beside Retina/LGN, V1, V2, V4 and IT by receptive-field size.

    ``layers`` are ``(name, rf_deg)`` in network order, where ``rf_deg`` is the theoretical receptive field in
    degrees for an input spanning ``fov_deg`` (``float('inf')`` is accepted for a global field). Rule, with
    the boundaries read from ``areas.toml``:

    - field < 0.5° (smallest typical V1 field) → Retina / LGN, which also stands for the input image;
    - 0.5°–2° (typical V1 fields near the fovea) → V1;
    - from 2° up to IT size → V2, then V4 above the geometric midpoint of that range;
    - field ≥ 10°, or covering the whole image when the image is narrower than 10° → IT.

    An area never comes before an area already placed upstream: a layer whose field is smaller than an
    earlier layer's keeps the earlier layer's area, so the ladder always follows the layer order.
    Raises ``ValueError`` for a non-positive field of view, a negative or NaN field, or a repeated name.
    """
    if not (math.isfinite(fov_deg) and fov_deg > 0):
        raise ValueError(f"fov_deg must be a positive number of degrees, got {fov_deg!r}")
    names = [name for name, _ in layers]
    if len(set(names)) != len(names):
        raise ValueError("layer names must be unique")
    for name, rf_deg in layers:
        if not name:
            raise ValueError("layer names must not be empty")
        if math.isnan(rf_deg) or rf_deg < 0:
            raise ValueError(f"receptive field of {name!r} must be >= 0 degrees, got {rf_deg!r}")

    knowledge = load_knowledge()
    bands = _bands(fov_deg, knowledge)
    placements: list[LayerPlacement] = []
    held_back: list[str] = []
    current = 0
    for name, rf_deg in layers:
        by_size = _band_of(float(rf_deg), bands)
        if by_size < current:
            held_back.append(name)
        current = max(current, by_size)
        placements.append(
            LayerPlacement(
                layer=name,
                rf_deg=float(rf_deg),
                area=ALIGNMENT_AREAS[current],
                area_by_size=ALIGNMENT_AREAS[by_size],
            )
        )

    area_names = {area.id: area.name for area in knowledge.areas}
    rungs: list[AreaBand] = []
    for index, area in enumerate(ALIGNMENT_AREAS):
        low, high = bands[index]
        members = tuple(p.layer for p in placements if p.area == area)
        note = None
        if not members and area != "LGN":
            note = f"No layer in this list has a field in {area}'s range ({_range_text(low, high, fov_deg)})."
        rungs.append(
            AreaBand(
                area=area,
                name=area_names[area],
                min_deg=low,
                max_deg=high,
                layers=members,
                includes_input=area == "LGN",
                note=note,
            )
        )

    notes: list[str] = []
    lgn_layers = [p.layer for p in placements if p.area == "LGN"]
    if lgn_layers:
        notes.append(
            f"{_join(lgn_layers)} sit{'s' if len(lgn_layers) == 1 else ''} with Retina / LGN on field size alone; "
            "a first layer's filters can still look like V1 simple cells."
        )
    if held_back:
        notes.append(
            f"{_join(held_back)} {'has' if len(held_back) == 1 else 'have'} a smaller field than an earlier layer, "
            "so it stays with the earlier layer's area to keep the ladder in order."
        )

    return IllustrativeAlignment(
        fov_deg=fov_deg,
        areas=tuple(rungs),
        layers=tuple(placements),
        explanation=_explanation(fov_deg, bands, knowledge),
        notes=tuple(notes),
        thresholds=knowledge.thresholds,
    )


def _range_text(low: float | None, high: float | None, fov_deg: float) -> str:
    if low is None and high is not None:
        return f"below {_fmt(high)}°"
    if high is None and low is not None:
        whole = " (the whole image)" if math.isclose(low, fov_deg) else ""
        return f"{_fmt(low)}° or more{whole}"
    return f"{_fmt(low or 0.0)}–{_fmt(high or 0.0)}°"


def _explanation(fov_deg: float, bands: list[tuple[float | None, float | None]], knowledge: Knowledge) -> str:
    v1_min = knowledge.threshold("v1_min_deg")
    v1_max = knowledge.threshold("v1_max_deg")
    it_min = knowledge.threshold("it_min_deg")
    split = bands[2][1] or 0.0
    it_edge = bands[4][0] or 0.0
    it_text = (
        f"fields that cover the whole {_fmt(fov_deg)}° image stand for IT, whose fields exceed {_fmt(it_min.deg)}°"
        if it_edge < it_min.deg
        else f"fields of {_fmt(it_min.deg)}° or more stand for IT"
    )
    return (
        f"Illustrative only. Each layer is placed by the size of its theoretical receptive field, with the "
        f"input image spanning {_fmt(fov_deg)}°. Fields under {_fmt(v1_min.deg)}° sit with Retina / LGN; "
        f"{_fmt(v1_min.deg)}–{_fmt(v1_max.deg)}° matches V1 near the fovea ({_short_cite(v1_min.source)}); "
        f"larger fields go to V2 and then, above {_fmt(split)}°, to V4, because both are larger than V1 and V4 "
        f"larger than V2, but no absolute sizes for them are used here; {it_text} "
        f"({_short_cite(it_min.source)}). Areas never step backwards along the network. Real fields grow with "
        "eccentricity while a network's are the same everywhere, and published best-fit maps often disagree "
        "with this ladder."
    )
