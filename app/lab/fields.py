"""Early receptive fields measured like a physiologist would, and compared with V1 simple cells.

A channel's *linear receptive field* is the pattern of light that drives its centre unit: the weights of the
best linear model of that unit around a typical stimulus. Two estimates, both in input-pixel units (a change of
1 in a pixel's value on the 0–1 scale, before the model's normalisation):

* ``gradient``: the gradient of the centre unit with respect to the input, averaged over white-noise images
  (the network's exact local linearisation, averaged over operating points).
* ``reverse_correlation``: the spike-triggered average. Show Gaussian white noise, weight each image by the
  unit's rectified response and average (minus the mean image). For a linear filter followed by any static
  nonlinearity and Gaussian input this is proportional to the filter (Bussgang's theorem), which is why
  physiologists map simple cells this way; it only needs the responses, not the network's insides.

Each field is cropped to a square patch around the layer's centre unit (its receptive field plus a margin, 11 to
40 px), reduced to one spatial profile along its dominant colour direction (for most early channels close to
luminance), and fitted with a 2-D Gabor (:mod:`app.lab.gabor`). As a chance level, the same fit is run on each
profile with its pixels shuffled: the share of shuffled profiles that pass is what the threshold gives for free.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from app.engine.cards import Preprocess
from app.engine.models import LoadedModel
from app.lab.gabor import R2_GOOD, GaborFit, fit_gabor
from app.lab.recording import centre_units, record, resolve_layers
from app.lab.stimuli import to_network_input

logger = logging.getLogger(__name__)

FieldMethod = Literal["gradient", "reverse_correlation"]
MIN_PATCH = 11
MAX_PATCH = 40
CANVAS = 96  # largest input side used to measure early fields: a 40-px patch with room for padding effects
PROBE_CANVAS = 64  # enough to tell a field of up to 40 px from a larger one
GRADIENT_SAMPLES = 32
REVERSE_CORRELATION_SAMPLES = 4096
NOISE_SD = 0.2  # white-noise contrast around mid-grey, on the 0–1 pixel scale


@dataclass(frozen=True)
class ChannelField:
    channel: int
    field: np.ndarray  # (3, P, P) RGB linear receptive field
    profile: np.ndarray  # (P, P) spatial profile along the dominant colour direction
    colour: np.ndarray  # (3,) that colour direction, unit norm, sign chosen so its largest entry is positive
    fit: GaborFit | None  # None for a silent channel (no field to fit)
    shuffled_r2: float | None


@dataclass(frozen=True)
class LayerFields:
    """The linear receptive fields of every channel of one early layer."""

    model_id: str
    layer: str
    label: str
    method: FieldMethod
    trained: bool
    rf_px: int  # extent of the measured field (pixels where the centre unit's gradient is not zero)
    patch_px: int
    samples: int  # noise images used
    channels: list[ChannelField]
    seconds: float

    @property
    def fitted(self) -> list[ChannelField]:
        return [channel for channel in self.channels if channel.fit is not None]

    def share_well_fit(self, threshold: float = R2_GOOD) -> float:
        """Share of channels with a field whose Gabor fit reaches R² ≥ ``threshold``."""
        fitted = self.fitted
        return sum(1 for c in fitted if c.fit is not None and c.fit.r2 >= threshold) / len(fitted) if fitted else 0.0

    def control_share(self, threshold: float = R2_GOOD) -> float:
        """The same share for the pixel-shuffled profiles (chance level)."""
        values = [c.shuffled_r2 for c in self.fitted if c.shuffled_r2 is not None]
        return sum(1 for r2 in values if r2 >= threshold) / len(values) if values else 0.0


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first 2-D convolution in definition order (the one that sees the pixels)."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return name, child
    raise ValueError("the model has no 2-D convolution")


def _pixel_forward(module: nn.Module, preprocess: Preprocess, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    # The centre unit of every channel, as a function of raw 0–1 pixels (the normalisation is part of the path).
    return centre_units(record(module, [layer], to_network_input(pixels, preprocess))[layer])


def gradient_fields(
    module: nn.Module,
    preprocess: Preprocess,
    layer: str,
    *,
    samples: int = GRADIENT_SAMPLES,
    size: int = CANVAS,
    seed: int = 0,
) -> torch.Tensor:
    """(C, 3, size, size): each channel's centre-unit input gradient, averaged over ``samples`` noise images.

    Every channel needs its own backward pass; the batch is replicated per channel so that one backward serves
    a group of channels. Parameters stay frozen: the gradient flows to the input, which alone requires it.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = 0.5 + NOISE_SD * torch.randn(samples, 3, size, size, generator=generator)
    with torch.inference_mode():
        channels = _pixel_forward(module, preprocess, layer, noise[:1]).shape[1]
    fields = torch.zeros(channels, 3, size, size)
    group = max(1, 256 // samples)
    with torch.inference_mode(False), torch.enable_grad():
        for first in range(0, channels, group):
            chosen = list(range(first, min(channels, first + group)))
            pixels = noise.repeat(len(chosen), 1, 1, 1).requires_grad_(True)
            units = _pixel_forward(module, preprocess, layer, pixels)  # (len(chosen) * samples, C)
            picked = units.view(len(chosen), samples, -1)[torch.arange(len(chosen)), :, chosen]
            (gradient,) = torch.autograd.grad(picked.sum(), pixels)
            fields[first : first + len(chosen)] = gradient.view(len(chosen), samples, 3, size, size).mean(dim=1)
    return fields


def field_extent(fields: torch.Tensor) -> tuple[int, int, int]:
    """(size, centre row, centre column) of the smallest square holding every non-zero pixel of the fields."""
    energy = fields.abs().sum(dim=(0, 1))
    rows = torch.nonzero(energy.sum(dim=1) > 1e-6 * float(energy.max()))
    columns = torch.nonzero(energy.sum(dim=0) > 1e-6 * float(energy.max()))
    if not len(rows) or not len(columns):
        side = fields.shape[-1]
        return 1, side // 2, side // 2
    top, bottom = int(rows.min()), int(rows.max())
    left, right = int(columns.min()), int(columns.max())
    extent = max(bottom - top, right - left) + 1
    return extent, (top + bottom + 1) // 2, (left + right + 1) // 2


def reverse_correlation_fields(
    module: nn.Module,
    preprocess: Preprocess,
    layer: str,
    window: tuple[int, int, int],
    *,
    samples: int = REVERSE_CORRELATION_SAMPLES,
    size: int = CANVAS,
    batch: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """(C, 3, P, P): the spike-triggered average of Gaussian white noise, over the ``window`` (side, centre row,
    centre column) of the input, each image weighted by the centre unit's rectified response."""
    side, row, column = window
    top, left = row - side // 2, column - side // 2
    generator = torch.Generator().manual_seed(seed)
    weighted: torch.Tensor | None = None
    totals: torch.Tensor | None = None
    with torch.inference_mode():
        for _ in range(math.ceil(samples / batch)):
            noise = NOISE_SD * torch.randn(batch, 3, size, size, generator=generator)
            rates = _pixel_forward(module, preprocess, layer, 0.5 + noise).clamp_min(0).double()  # (B, C)
            patch = noise[:, :, top : top + side, left : left + side].reshape(batch, -1).double()
            contribution = rates.T @ patch
            weighted = contribution if weighted is None else weighted + contribution
            totals = rates.sum(dim=0) if totals is None else totals + rates.sum(dim=0)
    assert weighted is not None and totals is not None
    average = weighted / totals.clamp_min(1e-12)[:, None]
    return average.float().view(-1, 3, side, side)


def _crop(fields: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    side, row, column = window
    top, left = row - side // 2, column - side // 2
    return fields[:, :, top : top + side, left : left + side]


def dominant_profile(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (3, P, P) field as (spatial profile, colour direction): its best rank-1 colour × space approximation."""
    colours, rows, columns = field.shape
    left, singular, right = np.linalg.svd(field.reshape(colours, -1), full_matrices=False)
    colour, profile = left[:, 0], singular[0] * right[0]
    if colour[np.argmax(np.abs(colour))] < 0:
        colour, profile = -colour, -profile
    return profile.reshape(rows, columns), colour


def measure_fields(
    model: LoadedModel,
    layer: str,
    *,
    method: FieldMethod = "gradient",
    label: str | None = None,
    seed: int = 0,
) -> LayerFields:
    """Linear receptive fields of every channel of an early ``layer``, with their Gabor fits."""
    started = time.perf_counter()
    module, preprocess = model.module, model.card.preprocess
    resolve_layers(module, [layer], model.card.id)
    rf_px = field_extent(gradient_fields(module, preprocess, layer, samples=1, size=PROBE_CANVAS))[0]
    patch = int(min(MAX_PATCH, max(MIN_PATCH, rf_px + 4)))
    # The smallest canvas that holds the patch with a margin: the cost of every sample grows with its area.
    canvas = min(CANVAS, 16 * math.ceil((patch + 24) / 16))
    gradients = gradient_fields(module, preprocess, layer, size=canvas, seed=seed)
    _, row, column = field_extent(gradients)
    half = patch // 2
    window = (patch, min(max(row, half), canvas - patch + half), min(max(column, half), canvas - patch + half))
    if method == "gradient":
        fields, samples = _crop(gradients, window), GRADIENT_SAMPLES
    else:
        samples = REVERSE_CORRELATION_SAMPLES
        fields = reverse_correlation_fields(module, preprocess, layer, window, samples=samples, size=canvas, seed=seed)
    rng = np.random.default_rng(seed)
    channels: list[ChannelField] = []
    peak = float(fields.abs().amax()) or 1.0
    for index, field in enumerate(fields.numpy().astype(np.float64)):
        profile, colour = dominant_profile(field)
        silent = float(np.abs(field).max()) <= 1e-6 * peak
        fit = None if silent else fit_gabor(profile)
        shuffled = None if silent else fit_gabor(rng.permutation(profile.ravel()).reshape(profile.shape)).r2
        channels.append(ChannelField(index, field.astype(np.float32), profile, colour, fit, shuffled))
    seconds = time.perf_counter() - started
    logger.info(
        "linear fields of %s %s by %s: %d channels in %.1f s", model.card.id, layer, method, len(channels), seconds
    )
    return LayerFields(
        model_id=model.card.id,
        layer=layer,
        label=label or layer,
        method=method,
        trained=model.trained,
        rf_px=rf_px,
        patch_px=patch,
        samples=samples,
        channels=channels,
        seconds=seconds,
    )


def early_layers(model: LoadedModel, count: int = 2) -> list[str]:
    """The first ``count`` curated layers whose measured field spans 7 to 40 px: the stages comparable to V1
    simple cells (a 3×3 stem is too small to have a shape; deeper stages outgrow a patch)."""
    chosen: list[str] = []
    for curated in model.card.layers:
        probe = gradient_fields(model.module, model.card.preprocess, curated.name, samples=1, size=PROBE_CANVAS)
        extent, _, _ = field_extent(probe)
        if extent > MAX_PATCH:
            break
        if extent >= 7:
            chosen.append(curated.name)
        if len(chosen) == count:
            break
    return chosen


def describe_thresholds() -> dict[str, str]:
    """The definitions shown next to the numbers."""
    return {
        "field": "Linear receptive field of the channel's centre unit, in input pixels (see `method`); tiles are "
        "each scaled symmetrically around 0, so mid-grey is 0.",
        "profile": "The field's spatial profile along its dominant colour direction (best rank-1 colour × space "
        "approximation); this is what the Gabor is fitted to.",
        "r2": "Fraction of the profile's variance explained by the least-squares 2-D Gabor.",
        "well_fit": f"A channel counts as well fit by a Gabor when R² ≥ {R2_GOOD}.",
        "control": "The same fit on each profile with its pixels shuffled: the share that passes the threshold "
        "by chance.",
    }
