"""Representational similarity along the hierarchy, on real photos.

scikit-image's ``cat()`` is the same photo as ``chelsea()`` (the arrays are identical), so no second cat ships
with the project's dependencies. The same-category pair is two different people instead: scikit-image's
astronaut (Eileen Collins) and matplotlib's sample photo of Grace Hopper; the cross-category controls pair each
of them with the cat and with the coffee cup. A mirrored, re-framed copy of the cat stands for the same object
seen differently (an identity-preserving transformation).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from app.engine.analysis import Analyser, Analysis
from app.engine.models import ModelRegistry
from app.engine.store import AnalysisStore
from app.lab.similarity import compare_layers, cosine, pearson, summary

ROOT = Path(__file__).resolve().parents[2]


def test_measures_on_known_vectors() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    assert cosine(a, a) == pytest.approx(1.0) and cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, torch.zeros(3)) == 0.0
    assert pearson(a, 2 * a + 5) == pytest.approx(1.0) and pearson(a, torch.ones(3)) is None
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 0.0


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _photos() -> dict[str, np.ndarray]:
    chelsea = skimage.data.chelsea()
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as image:
        hopper = np.asarray(image.convert("RGB"))
    return {
        "cat": chelsea[:, :-8],
        "cat shifted 8 px": chelsea[:, 8:],
        "cat mirrored and re-framed": np.ascontiguousarray(chelsea[20:260, 60:420][:, ::-1]),
        "astronaut": skimage.data.astronaut(),
        "hopper": hopper,
        "coffee": skimage.data.coffee(),
    }


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    registry = ModelRegistry.from_folder(ROOT / "models", ROOT / "weights")
    analyser = Analyser(registry, AnalysisStore[Analysis](10**9), secret="test", max_bytes=10**8, max_pixels=10**8)
    return {name: analyser.analyse(_png(array), registry.default_id)[0] for name, array in _photos().items()}


def _similarity(analyses: dict[str, Analysis], first: str, second: str) -> list:  # type: ignore[type-arg]
    a, b = analyses[first], analyses[second]
    layers = [(name, result.label) for name, result in a.layers.items()]
    return compare_layers(
        {n: r.activation for n, r in a.layers.items()}, {n: r.activation for n, r in b.layers.items()}, layers
    )


def test_identical_images_are_identical_at_every_layer(analyses: dict[str, Analysis]) -> None:
    for layer in _similarity(analyses, "cat", "cat"):
        assert layer.cosine == pytest.approx(1.0, abs=1e-6) and layer.pearson == pytest.approx(1.0, abs=1e-6)


def test_a_shifted_copy_is_closer_early_than_a_different_photo(analyses: dict[str, Analysis]) -> None:
    # Measured (mean cosine over the first third of the layers): shifted copy 0.68; different photos 0.36–0.51.
    shifted_early, shifted_late = summary(_similarity(analyses, "cat", "cat shifted 8 px"))
    for first, second in (("cat", "astronaut"), ("astronaut", "hopper"), ("cat", "coffee")):
        other_early, _ = summary(_similarity(analyses, first, second))
        assert shifted_early > other_early + 0.15, (first, second, shifted_early, other_early)
    # Deeper stages pool over position, so the copy grows even closer with depth.
    assert shifted_late > shifted_early


def test_two_people_converge_with_depth_unlike_a_person_and_another_object(analyses: dict[str, Analysis]) -> None:
    # Measured: astronaut vs Hopper, cosine early 0.36 → late 0.15; person vs cat or cup, late 0.05–0.10.
    same = summary(_similarity(analyses, "astronaut", "hopper"))
    same_pearson = summary(_similarity(analyses, "astronaut", "hopper"), "pearson")
    controls = [("astronaut", "cat"), ("hopper", "cat"), ("astronaut", "coffee"), ("hopper", "coffee")]
    cross = np.array([summary(_similarity(analyses, a, b)) for a, b in controls])
    cross_pearson = np.array([summary(_similarity(analyses, a, b), "pearson") for a, b in controls])
    assert same[1] > cross[:, 1].max()  # late: the two people are closer than any person and non-person
    assert same_pearson[1] > cross_pearson[:, 1].max()
    # The same-category advantage appears only with depth (early on, the photos' colours and textures rule).
    assert same[1] - cross[:, 1].mean() > same[0] - cross[:, 0].mean() + 0.05


def test_the_same_cat_seen_differently_converges_late(analyses: dict[str, Analysis]) -> None:
    # Measured: mirrored and re-framed cat, cosine early 0.55 → late 0.70; cat vs astronaut or cup late ≤ 0.07.
    early, late = summary(_similarity(analyses, "cat", "cat mirrored and re-framed"))
    assert late > early
    assert late > 5 * max(summary(_similarity(analyses, "cat", other))[1] for other in ("astronaut", "coffee"))
