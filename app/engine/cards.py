"""Model cards: one TOML file per network under ``models/`` says where it comes from and what to show."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AREAS = ("V1", "V2", "V4", "IT")


class _Strict(BaseModel):
    # A typo in a card should fail loudly at start-up, not silently drop a setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    source: Literal["builtin", "torchvision"]  # builtin: ``app.engine.efficientnet_lite``
    constructor: str


class WeightsSpec(_Strict):
    source: Literal["package", "torchvision", "file"]
    file: str = Field(description="File name of the weights (inside the package, or in the weights folder).")
    package: str | None = None
    enum: str | None = Field(None, description="torchvision weights enum, e.g. 'AlexNet_Weights.IMAGENET1K_V1'.")
    layout: Literal["native", "lukemelas_efficientnet"] = "native"
    license: str | None = None


class Preprocess(_Strict):
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"


class CuratedLayer(_Strict):
    name: str
    label: str


class PublishedMapping(_Strict):
    """A layer → area map that a study committed for this network."""

    weights: str
    source: str
    url: str
    V1: str
    V2: str
    V4: str
    IT: str

    def layer_for(self, area: str) -> str:
        return str(getattr(self, area))


class ModelCard(_Strict):
    id: str
    name: str
    family: str
    description: str
    default: bool = False
    architecture: Architecture
    weights: WeightsSpec
    preprocess: Preprocess
    layers: tuple[CuratedLayer, ...]
    mappings: tuple[PublishedMapping, ...] = ()

    def layer(self, name: str) -> CuratedLayer | None:
        return next((layer for layer in self.layers if layer.name == name), None)


def load_cards(folder: Path) -> dict[str, ModelCard]:
    """Read every ``*.toml`` card in ``folder``, keyed by id, in file-name order."""
    cards: dict[str, ModelCard] = {}
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as handle:
            card = ModelCard.model_validate(tomllib.load(handle))
        if card.id in cards:
            raise ValueError(f"model id {card.id!r} is declared twice (second time in {path.name})")
        cards[card.id] = card
    return cards
