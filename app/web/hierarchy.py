"""The hierarchy view's data: one row per ventral-stream stage, its brain facts, and the layers placed beside it.

This module is the one place where the pages meet the brain knowledge (``app.brain``) and the receptive-field
geometry (``app.engine.receptive_field``). It adds no number of its own: areas and facts come from
``app.brain``; receptive fields, size bands, placements and published maps come from the same calls the JSON API
answers with (``ModelRegistry.receptive_fields``, ``app.api.models.model_alignment``), so the page and
``GET /api/v1/models/{id}/alignment`` always agree. If any of that fails, the view lists every curated layer in
network order under an "unassigned" stage, so an analysis page never breaks because of the science layer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from app.api.analyses import analysis_public
from app.api.models import model_alignment
from app.brain import AREA_IDS, Area, Fact, IllustrativeAlignment, PublishedMapping, load_areas, load_comparisons
from app.brain.knowledge import Comparison
from app.engine.analysis import Analysis
from app.engine.receptive_field import ReceptiveField, rf_in_degrees
from app.runtime import Runtime
from app.schemas import AnalysisPublic, LayerAnalysisPublic

logger = logging.getLogger(__name__)

UNASSIGNED = "unassigned"
# Facts shown up front in a stage row, in this order; the rest go under "more".
KEY_FACT_KINDS = ("rf_size", "rf_scaling", "latency", "features")


@dataclass(frozen=True)
class LayerView:
    """One curated layer as the hierarchy shows it."""

    layer: LayerAnalysisPublic
    position: int  # 1-based, in network order
    rf: ReceptiveField | None
    rf_deg: float | None
    published_areas: tuple[str, ...] = ()  # areas a published map puts on this layer

    @property
    def anchor(self) -> str:
        return "layer-" + self.layer.name.replace(".", "-")


@dataclass(frozen=True)
class PublishedPick:
    """A published map's layer for one area."""

    layer: str
    weights: str
    source: str
    url: str | None
    curated: bool  # the layer is one of the analysed layers, so the page can link to it


@dataclass(frozen=True)
class StageRow:
    """One row of the hierarchy: an area (or the unassigned placeholder) and the layers beside it."""

    area_id: str
    area: Area | None
    layers: tuple[LayerView, ...]
    includes_input: bool = False
    min_deg: float | None = None
    max_deg: float | None = None
    laddered: bool = True  # False for areas the size ladder does not place layers beside (PIT)
    note: str | None = None
    picks: tuple[PublishedPick, ...] = ()

    @property
    def key_facts(self) -> tuple[Fact, ...]:
        if self.area is None:
            return ()
        return tuple(fact for kind in KEY_FACT_KINDS for fact in self.area.facts_of(kind))

    @property
    def more_facts(self) -> tuple[Fact, ...]:
        if self.area is None:
            return ()
        return tuple(fact for fact in self.area.facts if fact.kind not in KEY_FACT_KINDS)


@dataclass(frozen=True)
class Hierarchy:
    rows: tuple[StageRow, ...]
    input_px: int
    fov_deg: float
    explanation: str | None = None
    notes: tuple[str, ...] = ()
    mappings: tuple[PublishedMapping, ...] = ()
    field_of_view: Comparison | None = None
    layers: tuple[LayerView, ...] = field(default=())

    @property
    def aligned(self) -> bool:
        return any(row.area_id != UNASSIGNED for row in self.rows)


def layer_receptive_fields(runtime: Runtime, model_id: str) -> dict[str, ReceptiveField]:
    """Theoretical receptive fields of every module of ``model_id`` (architecture only; cached by the registry)."""
    return runtime.registry.receptive_fields(model_id)


def layer_alignment(runtime: Runtime, model_id: str) -> tuple[IllustrativeAlignment, tuple[PublishedMapping, ...]]:
    """The illustrative ladder and the published maps, exactly as ``GET /api/v1/models/{id}/alignment`` has them."""
    alignment = model_alignment(runtime, model_id)
    return alignment.illustrative, tuple(alignment.published)


def _comparison(comparison_id: str) -> Comparison | None:
    return next((item for item in load_comparisons() if item.id == comparison_id), None)


def build_hierarchy(runtime: Runtime, analysis: Analysis, public: AnalysisPublic | None = None) -> Hierarchy:
    """The stage rows for ``analysis``: eye and LGN first, IT last, each with its layers in network order."""
    public = public or analysis_public(analysis)
    card = runtime.registry.card(analysis.model_id)
    input_px = card.preprocess.crop
    fov_deg = runtime.settings.fov_deg
    try:
        fields = layer_receptive_fields(runtime, analysis.model_id)
        alignment, mappings = layer_alignment(runtime, analysis.model_id)
    except Exception:  # the view still works without them; the reason goes to the log
        logger.exception("receptive fields or alignment of %s could not be computed", analysis.model_id)
        fields, alignment, mappings = {}, None, ()
    by_layer: dict[str, list[str]] = {}
    for mapping in mappings:
        for area, layer_name in mapping.layers.items():
            if area not in by_layer.setdefault(layer_name, []):
                by_layer[layer_name].append(area)

    views = []
    for position, layer in enumerate(public.layers, start=1):
        rf = fields.get(layer.name)
        views.append(
            LayerView(
                layer=layer,
                position=position,
                rf=rf,
                rf_deg=rf_in_degrees(rf.rf_px, input_px, fov_deg) if rf is not None else None,
                published_areas=tuple(by_layer.get(layer.name, ())),
            )
        )

    base = Hierarchy(
        rows=(StageRow(area_id=UNASSIGNED, area=None, layers=tuple(views), includes_input=True),),
        input_px=input_px,
        fov_deg=fov_deg,
        mappings=mappings,
        layers=tuple(views),
    )
    if alignment is None:
        return base
    placed = [name for band in alignment.areas for name in band.layers]
    if placed != [view.layer.name for view in views]:
        return base  # every analysed layer must sit in exactly one row, in network order, or none is aligned
    try:
        areas = {area.id: area for area in load_areas()}
    except Exception:
        logger.exception("the brain facts could not be loaded")
        return base

    curated = {view.layer.name for view in views}
    view_of = {view.layer.name: view for view in views}
    bands = {band.area: band for band in alignment.areas}
    rows = []
    for area_id in AREA_IDS:
        picks = tuple(
            PublishedPick(
                layer=mapping.layers[area_id],
                weights=mapping.weights,
                source=mapping.source,
                url=mapping.url,
                curated=mapping.layers[area_id] in curated,
            )
            for mapping in mappings
            if area_id in mapping.layers
        )
        band = bands.get(area_id)
        if band is None:
            rows.append(StageRow(area_id=area_id, area=areas.get(area_id), layers=(), laddered=False, picks=picks))
            continue
        rows.append(
            StageRow(
                area_id=area_id,
                area=areas.get(area_id),
                layers=tuple(view_of[name] for name in band.layers),
                includes_input=band.includes_input,
                min_deg=band.min_deg,
                max_deg=band.max_deg,
                note=band.note,
                picks=picks,
            )
        )
    return Hierarchy(
        rows=tuple(rows),
        input_px=input_px,
        fov_deg=fov_deg,
        explanation=alignment.explanation,
        notes=alignment.notes,
        mappings=mappings,
        field_of_view=_comparison("field_of_view"),
        layers=tuple(views),
    )


def degrees(value: float | None) -> str:
    """A field size in degrees for display: ``0.68°``, ``2.4°``, ``8°``."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.2g}°" if value < 1 else f"{value:.3g}°"
