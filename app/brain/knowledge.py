"""The brain facts the app shows, loaded from ``areas.toml`` and checked on the way in.

Every fact, comparison, threshold and note carries a short ``source`` and ``refs`` into the citation list;
the loader refuses data that breaks the house rules (no source, unknown citation, a number in the text
that is not one of the fact's sourced numeric fields), so bad data fails at start-up, not on a page.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

__all__ = [
    "AREA_IDS",
    "Area",
    "Citation",
    "Comparison",
    "Evidence",
    "Fact",
    "Knowledge",
    "KnowledgeError",
    "MappingNote",
    "Threshold",
    "area_by_id",
    "how_to_read",
    "load_areas",
    "load_citations",
    "load_comparisons",
    "load_knowledge",
    "numbers_in_text",
]

AREA_IDS: tuple[str, ...] = ("LGN", "V1", "V2", "V4", "PIT", "IT")
"""Area ids in processing order; ``areas.toml`` must list exactly these, in this order."""

THRESHOLD_KEYS: tuple[str, ...] = ("v1_min_deg", "v1_max_deg", "it_min_deg")

_PACKAGE = "app.brain"  # where areas.toml and how_to_read.md live

Evidence = Literal["verified", "derived"]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

_NUMERIC_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# A number written in prose: "650,000", "0.125", "86". Digits glued to a letter, digit or dot are part of a
# name ("V1", "hV4", "features.16"), not a quantity.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)")


class KnowledgeError(ValueError):
    """The facts file is missing, malformed, or breaks a sourcing rule."""


def numbers_in_text(text: str) -> list[float]:
    """Return the quantities written in ``text`` (names such as ``V1`` or ``features.16`` are skipped)."""
    return [float(token.replace(",", "")) for token in _NUMBER_IN_TEXT.findall(text)]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Frozen(BaseModel):
    # Loaded once and shared by every request, so nothing may change it; a typo in the data must fail loudly.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Fact(_Frozen):
    """One sourced statement. Any numeric key in the data file lands in ``numbers`` (e.g. ``latency_ms``)."""

    kind: NonEmpty = Field(description="What the fact is about: rf_size, rf_scaling, latency, features, ...")
    text: NonEmpty = Field(description="The product's wording, ready to show.")
    source: NonEmpty = Field(description="Short citation, e.g. 'Cavanaugh, Bair & Movshon 2002, J Neurophysiol'.")
    refs: tuple[NonEmpty, ...] = Field(min_length=1, description="Keys into the citation list.")
    evidence: Evidence
    method: NonEmpty | None = Field(None, description="How a derived value was computed from the cited data.")
    species: NonEmpty | None = Field(None, description="Set when not macaque (area facts) or when it matters.")
    numbers: dict[str, float] = Field(default_factory=dict, description="Sourced numeric values, keyed with units.")

    @model_validator(mode="before")
    @classmethod
    def _collect_numbers(cls, data: Any) -> Any:
        # The data file keeps numbers flat on the fact (latency_ms = 66) so it reads like the science notes;
        # gather them here. Unknown keys that are not numbers stay put, and extra="forbid" rejects them.
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        numbers = dict(data.pop("numbers", None) or {})
        for key in list(data):
            if key not in cls.model_fields and _is_number(data[key]):
                numbers[key] = data.pop(key)
        data["numbers"] = numbers
        return data

    @model_validator(mode="after")
    def _check_sourcing(self) -> Fact:
        if self.evidence == "derived" and self.method is None:
            raise ValueError(f"derived fact {self.text[:60]!r} needs a method")
        for key, value in self.numbers.items():
            if not _NUMERIC_KEY.match(key):
                raise ValueError(f"numeric field {key!r} must be snake_case")
            if not math.isfinite(value):
                raise ValueError(f"numeric field {key!r} must be finite")
        # A figure in the prose must be one of the sourced fields, so no number slips in unsourced. The same
        # quantity may be written as a percentage of a fraction or in millions/billions.
        written_forms = [
            form for value in self.numbers.values() for form in (value, value * 100, value / 1e6, value / 1e9)
        ]
        for number in numbers_in_text(self.text):
            if not any(math.isclose(number, form, rel_tol=1e-9) for form in written_forms):
                raise ValueError(f"the number {number:g} in {self.text[:60]!r}... is not one of its numeric fields")
        return self


class Comparison(Fact):
    """A general fact shown beside the network (time, scale, energy, field of view, ...)."""

    id: NonEmpty
    network_measure: NonEmpty | None = Field(
        None, description="What the app computes live for the network side, e.g. 'post_relu_zero_fraction'."
    )


class Threshold(Fact):
    """A field-size boundary, in degrees, used by the illustrative alignment."""

    key: Literal["v1_min_deg", "v1_max_deg", "it_min_deg"]

    @model_validator(mode="after")
    def _check_degrees(self) -> Threshold:
        if self.numbers.get("deg", 0.0) <= 0:
            raise ValueError(f"threshold {self.key!r} needs a positive 'deg'")
        return self

    @property
    def deg(self) -> float:
        """The boundary in degrees of visual angle."""
        return self.numbers["deg"]


class MappingNote(Fact):
    """A sourced caveat shown beside published layer → area mappings."""

    id: NonEmpty


class Area(_Frozen):
    """One stage of the ventral stream. Its facts are about the macaque unless ``Fact.species`` says otherwise."""

    id: NonEmpty
    name: NonEmpty = Field(description="Display name, e.g. 'Retina / LGN'.")
    long_name: NonEmpty
    summary: NonEmpty = Field(description="Short description of the features the area prefers.")
    facts: tuple[Fact, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _summary_has_no_numbers(self) -> Area:
        # Summaries carry no source of their own, so figures belong in the facts.
        if numbers_in_text(self.summary):
            raise ValueError(f"the summary of {self.id} contains a number; put it in a sourced fact")
        return self

    def facts_of(self, kind: str) -> tuple[Fact, ...]:
        """The area's facts of one kind, in file order."""
        return tuple(fact for fact in self.facts if fact.kind == kind)


class Citation(_Frozen):
    """A full reference; ``doi`` and ``url`` only where a checked source gives them."""

    key: NonEmpty
    reference: NonEmpty
    doi: NonEmpty | None = None
    url: NonEmpty | None = None


class Knowledge(_Frozen):
    """Everything in ``areas.toml``, validated as a whole."""

    areas: tuple[Area, ...]
    comparisons: tuple[Comparison, ...]
    thresholds: tuple[Threshold, ...]
    mapping_notes: tuple[MappingNote, ...]
    citations: tuple[Citation, ...]

    @model_validator(mode="after")
    def _check_consistency(self) -> Knowledge:
        ids = tuple(area.id for area in self.areas)
        if ids != AREA_IDS:
            raise ValueError(f"areas must be {', '.join(AREA_IDS)} in that order, got {', '.join(ids)}")
        for label, items in (("comparison", self.comparisons), ("mapping note", self.mapping_notes)):
            seen = [item.id for item in items]
            duplicates = sorted({item for item in seen if seen.count(item) > 1})
            if duplicates:
                raise ValueError(f"duplicate {label} id(s): {', '.join(duplicates)}")
        keys = tuple(threshold.key for threshold in self.thresholds)
        if keys != THRESHOLD_KEYS:
            raise ValueError(f"thresholds must be {', '.join(THRESHOLD_KEYS)} in that order, got {', '.join(keys)}")
        degrees = [threshold.deg for threshold in self.thresholds]
        if degrees != sorted(set(degrees)):
            raise ValueError("thresholds must increase: v1_min_deg < v1_max_deg < it_min_deg")
        cited = [citation.key for citation in self.citations]
        if len(cited) != len(set(cited)):
            raise ValueError("a citation key is declared twice")
        for fact in self.all_facts():
            unknown = [ref for ref in fact.refs if ref not in cited]
            if unknown:
                raise ValueError(f"unknown citation key(s) {unknown} in {fact.text[:60]!r}")
        return self

    def all_facts(self) -> tuple[Fact, ...]:
        """Every sourced record: area facts, comparisons, thresholds and mapping notes."""
        area_facts = tuple(fact for area in self.areas for fact in area.facts)
        return area_facts + self.comparisons + self.thresholds + self.mapping_notes

    def threshold(self, key: str) -> Threshold:
        """The threshold with this key (one of ``v1_min_deg``, ``v1_max_deg``, ``it_min_deg``)."""
        for threshold in self.thresholds:
            if threshold.key == key:
                return threshold
        raise KeyError(f"unknown threshold {key!r}; known: {', '.join(THRESHOLD_KEYS)}")

    def mapping_note(self, note_id: str) -> MappingNote:
        """The mapping note with this id."""
        for note in self.mapping_notes:
            if note.id == note_id:
                return note
        raise KeyError(f"unknown mapping note {note_id!r}")


def _default_path() -> Path:
    return Path(str(resources.files(_PACKAGE).joinpath("areas.toml")))


@functools.cache
def load_knowledge(path: Path | None = None) -> Knowledge:
    """Load and validate the facts file (default: the packaged ``areas.toml``); cached per path.

    Raises ``KnowledgeError`` if the file is missing, is not TOML, or breaks a sourcing rule.
    """
    path = path or _default_path()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise KnowledgeError(f"cannot read brain facts from {path}: {error}") from error
    try:
        return Knowledge.model_validate(data)
    except ValidationError as error:
        raise KnowledgeError(f"invalid brain facts in {path.name}: {error}") from error


def load_areas() -> tuple[Area, ...]:
    """The six areas in processing order: LGN, V1, V2, V4, PIT, IT."""
    return load_knowledge().areas


def area_by_id(area_id: str) -> Area:
    """The area with this id (case-insensitive); ``KeyError`` naming the known ids otherwise."""
    for area in load_areas():
        if area.id.lower() == area_id.strip().lower():
            return area
    raise KeyError(f"unknown area {area_id!r}; known areas: {', '.join(AREA_IDS)}")


def load_comparisons() -> tuple[Comparison, ...]:
    """General brain-vs-network comparisons (time, scale, energy, sparsity, field of view, filters)."""
    return load_knowledge().comparisons


def load_citations() -> dict[str, Citation]:
    """Full references keyed by citation key, in file order."""
    return {citation.key: citation for citation in load_knowledge().citations}


@functools.cache
def how_to_read() -> str:
    """The Markdown text of the "how to read this" page."""
    return resources.files(_PACKAGE).joinpath("how_to_read.md").read_text(encoding="utf-8")
