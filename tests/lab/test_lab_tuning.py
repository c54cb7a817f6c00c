"""Orientation tuning: the indices, a planted filter in a toy network, and the real default model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from app.engine.cards import Preprocess
from app.engine.models import LoadedModel, ModelRegistry
from app.lab.stimuli import Stimulus, grating, stimulus_grid, to_cycles_per_image, to_network_input
from app.lab.tuning import TuningSpec, analyse_rates, measure, run_orientation_tuning, tuning_from_responses

ORIENTATIONS = tuple(float(15 * k) for k in range(12))
GREY = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


# Stimuli --------------------------------------------------------------------------------------------------------


def test_grating_orientation_convention() -> None:
    # 0° = horizontal stripes (constant along each row), 90° = vertical stripes (constant along each column).
    horizontal = grating(Stimulus(0.0, 8.0, 0.0), size=64)
    vertical = grating(Stimulus(90.0, 8.0, 0.0), size=64)
    assert np.allclose(horizontal, horizontal[:, :1])
    assert np.allclose(vertical, vertical[:1, :], atol=1e-6)
    # 45° stripes climb to the right on screen: constant along (row - 1, column + 1).
    oblique = grating(Stimulus(45.0, 8.0, 0.0), size=64)
    assert np.allclose(oblique[1:, :-1], oblique[:-1, 1:], atol=1e-5)


def test_grating_frequency_contrast_and_units() -> None:
    # An odd size puts a pixel on the centre, where phase 0 puts the peak of a bright stripe.
    image = grating(Stimulus(90.0, 8.0, 0.0), size=65, contrast=0.5)
    row = image[0] - 0.5
    crossings = np.count_nonzero(np.diff(np.sign(row)))
    assert crossings == 16  # 8 cycles: two sign changes per cycle
    assert math.isclose(float(image.max()), 0.75, abs_tol=1e-3) and math.isclose(float(image.min()), 0.25, abs_tol=1e-3)
    assert to_cycles_per_image(2.0, "cycles_per_degree", 8.0) == 16.0
    assert to_cycles_per_image(2.0, "cycles_per_image", 8.0) == 2.0


def test_gabor_patch_fades_to_grey_and_network_input_is_normalised() -> None:
    patch = grating(Stimulus(30.0, 8.0, 0.0), size=64, kind="gabor", sigma_px=6.0)
    assert abs(float(patch[0, 0]) - 0.5) < 1e-6 and float(patch.max()) > 0.9
    batch = to_network_input(np.stack([patch]), GREY)
    assert batch.shape == (1, 3, 64, 64)
    assert torch.allclose(batch[0, 0], torch.from_numpy(patch * 2 - 1), atol=1e-6)


# Indices --------------------------------------------------------------------------------------------------------


def _indices(curve: list[float]) -> tuple[float, float, float]:
    responses = np.asarray(curve, dtype=float)[None, :, None]
    tuning = tuning_from_responses("x", responses, np.zeros(1), ORIENTATIONS, (1.0,))
    return float(tuning.preferred_deg[0]), float(tuning.osi[0]), float(tuning.one_minus_cv[0])


def test_osi_and_circular_variance_definitions() -> None:
    preferred, osi, one_minus_cv = _indices([0.0] * 4 + [2.0] + [0.0] * 7)
    assert (preferred, osi, one_minus_cv) == (60.0, 1.0, 1.0)
    _, osi, one_minus_cv = _indices([1.0] * 12)
    assert osi == 0.0 and one_minus_cv == pytest.approx(0.0, abs=1e-12)
    # R(θ) = 1 + cos 2(θ − 30°): R_pref = 2, R_orth = 0 → OSI 1; |Σ R e^{2iθ}| / Σ R = (12/2) / 12 = 0.5.
    curve = [1 + math.cos(2 * math.radians(angle - 30)) for angle in ORIENTATIONS]
    preferred, osi, one_minus_cv = _indices(curve)
    assert preferred == 30.0 and osi == pytest.approx(1.0) and one_minus_cv == pytest.approx(0.5)
    # R_pref 3 and R_orth 1: OSI = (3 − 1) / (3 + 1).
    _, osi, _ = _indices([3.0] + [2.0] * 5 + [1.0] + [2.0] * 5)
    assert osi == pytest.approx(0.5)


def test_baseline_is_subtracted_and_silent_channels_are_undefined() -> None:
    responses = np.stack([np.full((12, 1), 5.0), np.zeros((12, 1))])  # a constant channel and a silent one
    responses[0, 3, 0] = 6.0
    tuning = tuning_from_responses("x", responses, np.array([5.0, 0.0]), ORIENTATIONS, (1.0,))
    assert tuning.preferred_deg[0] == 45.0 and tuning.osi[0] == 1.0  # only the evoked part counts
    assert not tuning.responsive[1] and math.isnan(tuning.osi[1])


# A planted filter -----------------------------------------------------------------------------------------------


def _oriented_kernel(size: int, cycles_per_px: float, across: np.ndarray) -> np.ndarray:
    rows, columns = np.indices((size, size)) - (size - 1) / 2
    window = np.exp(-(rows**2 + columns**2) / (2 * (size / 5) ** 2))
    return np.sin(2 * math.pi * cycles_per_px * across) * window  # odd symmetric: an edge detector


def _toy_network() -> nn.Module:
    """Channels: 0° edge, 45° edge, 90° edge (built by hand, independently of the stimulus code), and an
    isotropic centre–surround cell like those of the LGN."""
    size, f = 15, 8 / 64
    rows, columns = np.indices((size, size)) - (size - 1) / 2
    kernels = [
        _oriented_kernel(size, f, rows),  # varies down the rows: horizontal stripes, 0°
        _oriented_kernel(size, f, (columns + rows) / math.sqrt(2)),  # constant where column + row is: 45°
        _oriented_kernel(size, f, columns),  # varies along the columns: vertical stripes, 90°
    ]
    radius2 = rows**2 + columns**2
    kernels.append(np.exp(-radius2 / (2 * 1.5**2)) - 0.25 * np.exp(-radius2 / (2 * 3.0**2)))
    conv = nn.Conv2d(3, len(kernels), size, padding=size // 2, bias=False)
    with torch.no_grad():
        weight = torch.tensor(np.stack(kernels), dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 3
        conv.weight.copy_(weight)
    return nn.Sequential(conv, nn.ReLU()).eval().requires_grad_(False)


@pytest.mark.parametrize("response", ["centre", "mean"])
def test_planted_oriented_filters_are_recovered(response: str) -> None:
    spec = TuningSpec(cycles_per_image=(4.0, 8.0, 16.0), phases=4, size=64, response=response)  # type: ignore[arg-type]
    rates = measure(_toy_network(), GREY, ["1"], spec)
    tuning = analyse_rates("1", rates["1"], spec)
    assert list(tuning.preferred_deg[:3]) == [0.0, 45.0, 90.0]
    assert list(tuning.preferred_cycles_per_image[:3]) == [8.0, 8.0, 8.0]
    assert (tuning.osi[:3] > 0.8).all() and (tuning.one_minus_cv[:3] > 0.3).all()
    # The isotropic centre–surround channel has no preferred orientation, like an LGN cell.
    # (Not exactly 0: a square pixel grid is not perfectly isotropic at 4 px per cycle.)
    assert tuning.osi[3] < 0.15 and tuning.one_minus_cv[3] < 0.1


def test_progress_and_cancellation_between_batches() -> None:
    from app.lab.tuning import Cancelled

    spec = TuningSpec(cycles_per_image=(8.0,), phases=2, size=32, batch_size=4)
    seen: list[float] = []
    measure(_toy_network(), GREY, ["1"], spec, progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == math.ceil(spec.stimulus_count / 4)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        measure(_toy_network(), GREY, ["1"], spec, cancelled=lambda: next(calls) >= 2)


def test_spec_refuses_orientations_without_their_orthogonal() -> None:
    with pytest.raises(ValueError, match="even number"):
        TuningSpec(orientations_deg=(0.0, 60.0, 120.0))
    with pytest.raises(ValueError, match="evenly spaced"):
        TuningSpec(orientations_deg=(0.0, 10.0, 90.0, 100.0))


# The real default model -----------------------------------------------------------------------------------------

EARLY = ["blocks.0", "blocks.1"]
# Centre units of these stages see at most 19 px, so a 64-px canvas holds their whole field with room to spare
# and costs a twelfth of a 224-px one; 8, 12 and 16 cycles per 64 px are 28, 42 and 56 cycles per 224 px.
ROTATION_SPEC = TuningSpec(cycles_per_image=(8.0, 12.0, 16.0), phases=4, size=64, batch_size=160)


@pytest.fixture(scope="module")
def default_model() -> LoadedModel:
    root = Path(__file__).resolve().parents[2]
    registry = ModelRegistry.from_folder(root / "models", root / "weights")
    return registry.get(registry.default_id)


@pytest.fixture(scope="module")
def early_tuning(default_model: LoadedModel) -> dict[str, np.ndarray]:
    return measure(default_model.module, default_model.card.preprocess, EARLY, ROTATION_SPEC)


def test_many_early_channels_of_the_trained_network_are_orientation_selective(
    early_tuning: dict[str, np.ndarray],
) -> None:
    # Measured: OSI > 0.3 in 75% of the responsive blocks.0 channels (16 of 16 respond) and in 76% of the
    # blocks.1 channels (21 of 24 respond).
    for layer in EARLY:
        tuning = analyse_rates(layer, early_tuning[layer], ROTATION_SPEC)
        assert tuning.responsive.mean() >= 0.8
        assert tuning.share_selective() >= 0.6, (layer, tuning.share_selective())


def _rotated_stimuli(spec: TuningSpec, degrees: float) -> np.ndarray:
    # Draw each stimulus on a larger canvas (so rotating leaves no empty corners), rotate the pixels about the
    # centre with cubic interpolation, crop back. Rotating by +d makes a θ grating a (θ + d) grating.
    size, canvas = spec.size, 2 * spec.size
    margin = (canvas - size) // 2
    images = [np.full((size, size), 0.5, dtype=np.float32)]
    for stimulus in stimulus_grid(spec.orientations_deg, spec.cycles_per_image, spec.phases):
        wide = Stimulus(stimulus.orientation_deg, stimulus.cycles_per_image * canvas / size, stimulus.phase_deg)
        rotated = ndimage.rotate(grating(wide, size=canvas), degrees, reshape=False, order=3, mode="reflect")
        images.append(rotated[margin : margin + size, margin : margin + size].astype(np.float32))
    return np.stack(images)


@pytest.mark.parametrize("steps", [1, 4])
def test_rotating_the_stimuli_shifts_preferred_orientations(
    default_model: LoadedModel, early_tuning: dict[str, np.ndarray], steps: int
) -> None:
    spec = ROTATION_SPEC
    rotated_rates = measure(
        default_model.module,
        default_model.card.preprocess,
        EARLY,
        spec,
        images=_rotated_stimuli(spec, 15.0 * steps),
    )
    for layer in EARLY:
        base = analyse_rates(layer, early_tuning[layer], spec)
        rotated = analyse_rates(layer, rotated_rates[layer], spec)
        selective = base.responsive & rotated.responsive & (base.osi > 0.3)
        assert selective.sum() >= 8
        # Stimulus labelled θ now shows θ + 15°·steps, so the preferred label moves down by `steps`.
        shift = np.round((base.preferred_deg[selective] - rotated.preferred_deg[selective]) / 15).astype(int)
        error = np.abs((shift - steps + 6) % 12 - 6)
        assert (error <= 1).mean() >= 0.9, (layer, error.tolist())


@pytest.mark.slow
def test_hierarchy_run_records_every_curated_layer(default_model: LoadedModel) -> None:
    spec = TuningSpec(cycles_per_image=(16.0, 56.0), phases=2)
    result = run_orientation_tuning(default_model, None, spec, fov_deg=8.0)
    assert [layer.name for layer in result.layers] == [layer.name for layer in default_model.card.layers]
    assert all(layer.curves.shape == (layer.channels, 12) for layer in result.layers)
    assert result.layer("bn2").channels == 1280
