"""Gabor fits and linear receptive fields: known answers first, then the real networks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from app.engine.cards import Preprocess
from app.engine.models import ModelRegistry
from app.lab.fields import (
    dominant_profile,
    early_layers,
    field_extent,
    first_conv,
    gradient_fields,
    measure_fields,
    reverse_correlation_fields,
)
from app.lab.gabor import R2_GOOD, fit_gabor, gabor

ROOT = Path(__file__).resolve().parents[2]
GREY = Preprocess(resize=48, crop=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _angle_error(a: float, b: float) -> float:
    difference = abs(a - b) % 180
    return min(difference, 180 - difference)


@pytest.mark.parametrize(
    ("shape", "params"),
    [
        # (A, x0, y0, σx, σy, θ across the stripes, f cycles/px, φ, c)
        ((23, 23), (1.0, 2.0, -1.5, 3.0, 4.5, math.radians(30), 0.15, 1.0, 0.05)),
        ((11, 11), (2.0, 0.5, 0.3, 1.8, 2.2, math.radians(110), 0.22, -2.0, 0.0)),
        ((31, 31), (0.5, -3.0, 2.0, 4.0, 6.0, math.radians(-60), 0.08, 2.5, 0.0)),
    ],
)
def test_a_known_gabor_is_recovered_from_a_noisy_patch(shape: tuple[int, int], params: tuple[float, ...]) -> None:
    clean = gabor(shape, params)
    noisy = clean + np.random.default_rng(0).normal(0, 0.05 * np.abs(clean).max(), shape)
    fit = fit_gabor(noisy)
    amplitude, x0, y0, sigma_x, sigma_y, theta, frequency, _, _ = params
    assert fit.r2 > 0.9
    assert _angle_error(fit.orientation_deg, math.degrees(theta) + 90) < 3  # stripes run at θ + 90°
    assert fit.cycles_per_pixel == pytest.approx(frequency, rel=0.05)
    assert (fit.x0, fit.y0) == (pytest.approx(x0, abs=0.3), pytest.approx(y0, abs=0.3))
    assert (fit.sigma_x, fit.sigma_y) == (pytest.approx(sigma_x, rel=0.15), pytest.approx(sigma_y, rel=0.15))
    assert fit.amplitude == pytest.approx(amplitude, rel=0.1)
    # The fitted patch itself matches the clean Gabor, not the noise.
    assert np.corrcoef(fit.fitted.ravel(), clean.ravel())[0, 1] > 0.99


def test_white_noise_is_not_a_gabor() -> None:
    rng = np.random.default_rng(1)
    r2 = [fit_gabor(rng.normal(size=(23, 23))).r2 for _ in range(5)]
    assert max(r2) < 0.2


def test_orientation_convention_matches_the_stimuli() -> None:
    # A patch of 90° (vertical) stripes drawn by the stimulus code is fitted as 90°.
    from app.lab.stimuli import Stimulus, grating

    patch = grating(Stimulus(90.0, 4.0, 0.0), size=21, kind="gabor", sigma_px=4.0) - 0.5
    assert _angle_error(fit_gabor(patch).orientation_deg, 90.0) < 2


# Linear receptive fields of a planted filter ---------------------------------------------------------------------


def _planted() -> tuple[nn.Module, np.ndarray]:
    """A one-channel network whose linear filter is known: an oriented 9×9 kernel, then a ReLU."""
    kernel = gabor((9, 9), (1.0, 0.0, 0.0, 2.0, 2.5, math.radians(20), 0.18, 0.4, 0.0))
    conv = nn.Conv2d(3, 1, 9, padding=4, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(kernel, dtype=torch.float32).expand(1, 3, 9, 9))
    return nn.Sequential(conv, nn.ReLU()).eval().requires_grad_(False), kernel


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_reverse_correlation_recovers_a_planted_linear_filter() -> None:
    network, kernel = _planted()
    extent, row, column = field_extent(gradient_fields(network, GREY, "1", samples=4, size=48))
    assert extent == 9
    sta = reverse_correlation_fields(network, GREY, "1", (9, row, column), samples=4096, size=48)
    profile, colour = dominant_profile(sta[0].numpy().astype(np.float64))
    assert _correlation(profile, kernel) > 0.95
    assert np.allclose(colour, 1 / math.sqrt(3), atol=0.05)  # grey: equal weight on R, G and B


def test_the_gradient_is_the_planted_filter_exactly() -> None:
    network, kernel = _planted()
    fields = gradient_fields(network, GREY, "1", samples=16, size=48)
    extent, row, column = field_extent(fields)
    window = fields[0, :, row - 4 : row + 5, column - 4 : column + 5].numpy()
    # Each colour's gradient is the kernel (the normalisation divides by std 0.5: ×2), where the unit is active.
    assert _correlation(window.sum(axis=0), kernel) > 0.999
    assert fit_gabor(window.sum(axis=0)).r2 > 0.99


# Real networks --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.from_folder(ROOT / "models", ROOT / "weights", allow_untrained=True)


def test_first_conv_and_early_layers_of_the_default_model(registry: ModelRegistry) -> None:
    model = registry.get("efficientnet_lite0")
    name, conv = first_conv(model.module)
    assert name == "conv_stem" and tuple(conv.weight.shape) == (32, 3, 3, 3)
    assert early_layers(model) == ["blocks.0", "blocks.1"]  # fields of 7 and 19 px; the 3×3 stem is too small


@pytest.mark.parametrize(
    ("layer", "channels", "patch", "minimum"),
    [("blocks.0", 16, 11, 0.8), pytest.param("blocks.1", 24, 23, 0.6, marks=pytest.mark.slow)],
)
def test_trained_early_fields_are_gabor_like_and_beat_chance(
    registry: ModelRegistry, layer: str, channels: int, patch: int, minimum: float
) -> None:
    # Measured (gradient method, 32 noise images): blocks.0 16/16 channels reach R² ≥ 0.5, shuffled control 19%;
    # blocks.1 20/24 (83%), control 0%.
    fields = measure_fields(registry.get("efficientnet_lite0"), layer)
    assert (fields.rf_px, fields.patch_px, len(fields.channels)) == (patch - 4, patch, channels)
    assert fields.share_well_fit() >= minimum, fields.share_well_fit()
    assert fields.share_well_fit() - fields.control_share(R2_GOOD) >= 0.5


@pytest.mark.slow
def test_untrained_alexnet_has_11_px_fields_that_are_not_gabors(registry: ModelRegistry) -> None:
    # Random weights: the fields exist (AlexNet's conv1 is 11×11) but have no Gabor structure; measured 0 of 64.
    model = registry.get("alexnet")
    assert not model.trained
    fields = measure_fields(model, "features.0")
    assert (fields.rf_px, len(fields.channels)) == (11, 64)
    assert fields.share_well_fit() < 0.2
