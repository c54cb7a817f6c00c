"""Two images, one hierarchy: how alike the network's representations of two images are, stage by stage.

Two measures per layer, on the activations an analysis already holds:

* ``cosine``: cosine similarity of the two full activation tensors (every channel at every position). It
  compares the maps position by position, so it is sensitive to where things are.
* ``pearson``: Pearson correlation of the two vectors of channel means (each channel's map averaged over
  space). Pooling discards position, so it asks only whether the same features are present.

Early stages encode local, position-bound features; along the ventral stream and along a trained network's
depth, representations become more tolerant to position and more about object category (DiCarlo, Zoccolan &
Rust 2012; Yamins et al. 2014). So a photo and its shifted copy should be most alike early, while two different
cats should grow more alike with depth, and more alike late than a cat and something else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFINITIONS = {
    "cosine": "Cosine similarity of the two full activation tensors of the layer (all channels, all positions): "
    "1 identical up to scale, 0 unrelated.",
    "pearson": "Pearson correlation of the two vectors of channel means (each channel's map averaged over space): "
    "whether the same features are present, wherever they are.",
}
EXPLANATION = (
    "Early stages respond to local features at fixed positions, so a photo and its slightly shifted copy look alike "
    "there while two different photos do not; deeper stages pool over position and respond to object "
    "properties, so two different cats become more alike with depth and more alike than a cat and a non-cat. "
    "The same trend runs along the primate ventral stream, whose late stages (IT) carry position-tolerant object "
    "identity and category, and the deep layers of networks trained on object recognition best predict IT "
    "responses (DiCarlo, Zoccolan & Rust 2012; Yamins et al. 2014)."
)
SOURCES = (
    "DiCarlo, Zoccolan & Rust 2012, Neuron 73:415",
    "Yamins et al. 2014, PNAS 111:8619",
)
REFS = ("dicarlo2012", "yamins2014")


@dataclass(frozen=True)
class LayerSimilarity:
    name: str
    label: str
    cosine: float
    pearson: float | None  # None when a vector is constant (a correlation is undefined)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors of the same shape, flattened (0 when either is all zeros)."""
    x, y = a.reshape(-1).double(), b.reshape(-1).double()
    norms = float(x.norm() * y.norm())
    return float(torch.dot(x, y)) / norms if norms > 0 else 0.0


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two 1-D tensors (None when either is constant)."""
    x, y = a.double() - a.double().mean(), b.double() - b.double().mean()
    norms = float(x.norm() * y.norm())
    if norms <= 0:
        return None
    value = float(torch.dot(x, y)) / norms
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else None


def compare_layers(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], layers: Sequence[tuple[str, str]]
) -> list[LayerSimilarity]:
    """Both measures for each (name, label) of ``layers``, from (C, H, W) activations keyed by layer name."""
    results = []
    for name, label in layers:
        a, b = first[name], second[name]
        if a.shape != b.shape:
            raise ValueError(f"layer {name} has shapes {tuple(a.shape)} and {tuple(b.shape)}")
        means_a = a.reshape(a.shape[0], -1).mean(dim=1)
        means_b = b.reshape(b.shape[0], -1).mean(dim=1)
        results.append(LayerSimilarity(name, label, cosine(a, b), pearson(means_a, means_b)))
    return results


def summary(similarities: Sequence[LayerSimilarity], measure: str = "cosine") -> tuple[float, float]:
    """(mean over the first third of the layers, mean over the last third): early vs late similarity."""
    values = np.array([getattr(s, measure) if getattr(s, measure) is not None else np.nan for s in similarities])
    third = max(1, len(values) // 3)
    return float(np.nanmean(values[:third])), float(np.nanmean(values[-third:]))
