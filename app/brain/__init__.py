"""Brain knowledge for cortexlens: sourced facts about the ventral stream and layer ↔ area alignments.

No web framework here; the API and pages read these functions.

- ``load_areas()``, ``area_by_id(id)``, ``load_comparisons()``, ``load_citations()``: the data in
  ``areas.toml``, validated at load (every fact has a source, every number in a text is a sourced field).
- ``published_mappings(card)``: a model card's published best-fit maps, with where they collapse or run
  out of order, and why.
- ``illustrative_alignment(layers, fov_deg)``: a monotonic ladder of layers beside areas by field size.
- ``how_to_read()``: the Markdown text of the "how to read this" page.
"""

from app.brain.alignment import (
    ALIGNMENT_AREAS,
    MAPPED_AREAS,
    AreaBand,
    IllustrativeAlignment,
    Inversion,
    LayerPlacement,
    Note,
    PublishedMapping,
    SharedLayer,
    illustrative_alignment,
    published_mappings,
)
from app.brain.knowledge import (
    AREA_IDS,
    Area,
    Citation,
    Comparison,
    Evidence,
    Fact,
    Knowledge,
    KnowledgeError,
    MappingNote,
    Threshold,
    area_by_id,
    how_to_read,
    load_areas,
    load_citations,
    load_comparisons,
    load_knowledge,
    numbers_in_text,
)

__all__ = [
    "ALIGNMENT_AREAS",
    "AREA_IDS",
    "MAPPED_AREAS",
    "Area",
    "AreaBand",
    "Citation",
    "Comparison",
    "Evidence",
    "Fact",
    "IllustrativeAlignment",
    "Inversion",
    "Knowledge",
    "KnowledgeError",
    "LayerPlacement",
    "MappingNote",
    "Note",
    "PublishedMapping",
    "SharedLayer",
    "Threshold",
    "area_by_id",
    "how_to_read",
    "illustrative_alignment",
    "load_areas",
    "load_citations",
    "load_comparisons",
    "load_knowledge",
    "numbers_in_text",
    "published_mappings",
]
