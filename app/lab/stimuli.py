"""Visual stimuli of the physiology lab: sinusoidal gratings and Gabor patches, and their trip into a network.

Conventions, used everywhere in ``app.lab``:

* An image is ``size`` × ``size`` pixels of luminance in [0, 1], mid-grey 0.5, spanning ``fov_deg`` degrees of
  visual angle (Brain-Score's 8° for a 224-px input, the ``fov_deg`` setting), so
  ``cycles/degree = cycles/image ÷ fov_deg``.
* Orientation is the angle of the stripes, counter-clockwise from horizontal as seen on screen: 0° is
  horizontal bars, 90° vertical bars. Orientations repeat every 180°.
* Phase is that of the cosine at the image centre: 0° puts a bright stripe through the centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from app.engine.cards import Preprocess

StimulusKind = Literal["grating", "gabor"]


@dataclass(frozen=True)
class Stimulus:
    """The parameters of one image."""

    orientation_deg: float
    cycles_per_image: float
    phase_deg: float


def to_cycles_per_image(
    frequency: float, unit: Literal["cycles_per_image", "cycles_per_degree"], fov_deg: float
) -> float:
    """A spatial frequency in cycles per image, from either unit."""
    return frequency * fov_deg if unit == "cycles_per_degree" else frequency


def _coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres relative to the image centre, y pointing up so that angles turn counter-clockwise on screen.
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
    x = axis[None, :]
    y = -axis[:, None]
    return x, y


def grating(
    stimulus: Stimulus,
    *,
    size: int,
    kind: StimulusKind = "grating",
    contrast: float = 1.0,
    sigma_px: float | None = None,
) -> np.ndarray:
    """One (size, size) luminance image: a full-field grating, or a Gabor patch (Gaussian envelope of
    standard deviation ``sigma_px``, centred) fading into mid-grey."""
    x, y = _coordinates(size)
    theta = np.deg2rad(stimulus.orientation_deg)
    # Luminance varies across the stripes, i.e. along the direction perpendicular to the orientation.
    across = -x * np.sin(theta) + y * np.cos(theta)
    carrier = np.cos(2 * np.pi * stimulus.cycles_per_image / size * across + np.deg2rad(stimulus.phase_deg))
    if kind == "gabor":
        sigma = sigma_px if sigma_px is not None else size / 8
        carrier = carrier * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return (0.5 + 0.5 * contrast * carrier).astype(np.float32)


def stimulus_grid(orientations_deg: Sequence[float], cycles_per_image: Sequence[float], phases: int) -> list[Stimulus]:
    """Every combination, orientation-major: ``phases`` evenly spaced phases per orientation and frequency."""
    phase_values = [360.0 * k / phases for k in range(phases)]
    return [
        Stimulus(float(orientation), float(frequency), phase)
        for orientation in orientations_deg
        for frequency in cycles_per_image
        for phase in phase_values
    ]


def to_network_input(luminance: np.ndarray | torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(N, H, W) luminance in [0, 1] → the (N, 3, H, W) batch the network expects: grey RGB, normalised with
    the model card's mean and standard deviation, exactly as an uploaded photo would be."""
    pixels = torch.as_tensor(luminance, dtype=torch.float32)
    if pixels.dim() == 3:
        pixels = pixels[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std
