"""Virtual electrophysiology: orientation tuning of every channel of a layer, the way Hubel and Wiesel probed V1.

A channel's response to one image is a firing rate: its activation rectified at 0 (the centre unit, or the mean
over the whole map of each unit's rectified activation). For each orientation and spatial frequency the rate
is averaged over evenly spaced phases (so the measure does not depend on where a stripe falls), and the rate to
a blank mid-grey screen (the "spontaneous" rate) is subtracted and the difference rectified at 0 again. The
tuning curve is taken at the channel's preferred spatial frequency (the one with the largest peak response).

Indices, both computed on those baseline-subtracted, rectified responses ``R(θ)``:

* ``OSI = (R_pref − R_orth) / (R_pref + R_orth)``: ``R_pref`` the largest response, ``R_orth`` the response
  90° away. 0: no preference; 1: silent at the orthogonal orientation.
* ``1 − CV = |Σ R(θ) e^{2iθ}| / Σ R(θ)``: one minus the circular variance (orientation is a 180°-periodic
  variable, hence 2θ). It uses the whole curve rather than two points, so it is less sensitive to noise and to
  narrow peaks between sampled orientations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from app.engine.cards import Preprocess
from app.engine.models import LoadedModel
from app.lab.recording import Reduce, record, rectified_centre, rectified_mean, resolve_layers
from app.lab.stimuli import StimulusKind, grating, stimulus_grid, to_network_input

logger = logging.getLogger(__name__)

ResponseMode = Literal["centre", "mean"]
OSI_SELECTIVE = 0.3
"""A channel with ``OSI > 0.3`` is called orientation selective (a threshold common in mouse and monkey V1
surveys; stated with every figure that uses it)."""
RESPONSIVE_FRACTION = 0.01
"""A channel is "responsive" when its peak evoked rate exceeds 1% of the largest peak in its layer; the indices
of channels below that are left undefined rather than computed from rounding noise."""

DEFINITIONS = {
    "response": "Each channel's activation rectified at 0 (a firing rate cannot be negative), at the centre unit "
    "or averaged over all units of the map; averaged over the phases; minus the response to a blank mid-grey "
    "image, rectified at 0 again. Curves are taken at the channel's preferred spatial frequency.",
    "osi": "OSI = (R_pref − R_orth) / (R_pref + R_orth): R_pref the largest response, R_orth the response at the "
    "orientation 90° away. 0 means no preference; 1 means no response at the orthogonal orientation.",
    "one_minus_cv": "1 − CV = |Σ R(θ)·exp(2iθ)| / Σ R(θ), one minus the circular variance of the tuning curve "
    "(angles doubled because orientation repeats every 180°). Uses the whole curve, not two points.",
    "preferred_deg": "The orientation with the largest response: stripe angle counter-clockwise from horizontal, "
    "0° horizontal, 90° vertical.",
    "selective": f"A channel is called orientation selective when its OSI exceeds {OSI_SELECTIVE}.",
    "responsive": "Channels whose peak evoked response is under 1% of the largest in their layer are counted as "
    "unresponsive; their indices are null.",
}


class Cancelled(Exception):  # noqa: N818 - it is a request, not a failure
    """The experiment was cancelled between two batches."""


@dataclass(frozen=True)
class TuningSpec:
    """What to show the network. ``orientations_deg`` must be evenly spaced over 180° with a step that
    divides 90°, so the orthogonal orientation of each is also shown."""

    orientations_deg: tuple[float, ...] = tuple(float(15 * k) for k in range(12))
    cycles_per_image: tuple[float, ...] = (16.0, 32.0, 56.0)
    phases: int = 4
    stimulus: StimulusKind = "grating"
    response: ResponseMode = "centre"
    contrast: float = 1.0
    sigma_px: float | None = None
    size: int = 224
    batch_size: int = 16

    def __post_init__(self) -> None:
        count = len(self.orientations_deg)
        if count < 4 or count % 2:
            raise ValueError("give an even number of orientations, at least 4")
        step = 180.0 / count
        expected = [self.orientations_deg[0] + k * step for k in range(count)]
        if not np.allclose(self.orientations_deg, expected, atol=1e-6):
            raise ValueError("orientations must be evenly spaced over 180°")
        if not self.cycles_per_image or self.phases < 1:
            raise ValueError("give at least one spatial frequency and one phase")

    @property
    def stimulus_count(self) -> int:
        return len(self.orientations_deg) * len(self.cycles_per_image) * self.phases + 1


@dataclass(frozen=True)
class LayerTuning:
    """Every channel of one layer. Arrays are indexed by channel; NaN marks unresponsive channels."""

    name: str
    curves: np.ndarray  # (C, orientations) R(θ) at each channel's preferred frequency
    preferred_cycles_per_image: np.ndarray  # (C,)
    preferred_deg: np.ndarray  # (C,)
    osi: np.ndarray  # (C,)
    one_minus_cv: np.ndarray  # (C,)
    responsive: np.ndarray  # (C,) bool
    blank: np.ndarray = field(repr=False)  # (C,) response to mid-grey, before subtraction

    @property
    def channels(self) -> int:
        return int(self.curves.shape[0])

    def share_selective(self, threshold: float = OSI_SELECTIVE) -> float:
        """Share of responsive channels whose OSI exceeds ``threshold`` (0 when none respond)."""
        valid = self.osi[self.responsive]
        return float((valid > threshold).mean()) if valid.size else 0.0


def tuning_from_responses(
    name: str,
    responses: np.ndarray,
    blank: np.ndarray,
    orientations_deg: Sequence[float],
    cycles_per_image: Sequence[float],
) -> LayerTuning:
    """Tuning of each channel from phase-averaged rates ``responses`` of shape (C, orientations, frequencies)
    and the blank-screen rate ``blank`` (C,)."""
    evoked = np.clip(responses - blank[:, None, None], 0.0, None)
    channels, orientations, _ = evoked.shape
    best_frequency = evoked.max(axis=1).argmax(axis=1)  # (C,)
    curves = evoked[np.arange(channels), :, best_frequency]  # (C, orientations)
    peak = curves.max(axis=1)
    responsive = peak > RESPONSIVE_FRACTION * max(float(peak.max()), 1e-12)
    preferred = curves.argmax(axis=1)
    orthogonal = (preferred + orientations // 2) % orientations
    r_pref = curves[np.arange(channels), preferred]
    r_orth = curves[np.arange(channels), orthogonal]
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = (r_pref - r_orth) / (r_pref + r_orth)
        doubled = np.exp(2j * np.deg2rad(np.asarray(orientations_deg, dtype=np.float64)))
        one_minus_cv = np.abs(curves @ doubled) / curves.sum(axis=1)
    orientation_values = np.asarray(orientations_deg, dtype=np.float64)
    nan = np.full(channels, np.nan)
    return LayerTuning(
        name=name,
        curves=curves.astype(np.float32),
        preferred_cycles_per_image=np.asarray(cycles_per_image, dtype=np.float64)[best_frequency],
        preferred_deg=np.where(responsive, orientation_values[preferred], nan),
        osi=np.where(responsive, osi, nan),
        one_minus_cv=np.where(responsive, one_minus_cv, nan),
        responsive=responsive,
        blank=blank.astype(np.float32),
    )


def _reducer(mode: ResponseMode) -> Reduce:
    return rectified_centre if mode == "centre" else rectified_mean


def measure(
    module: nn.Module,
    preprocess: Preprocess,
    layers: Sequence[str],
    spec: TuningSpec,
    *,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    images: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each layer's rates to every stimulus of ``spec`` (the blank first), shape (stimuli, C).

    One forward pass per batch, stopped after the deepest requested layer; stimuli are drawn batch by batch so
    memory stays flat. ``cancelled`` is checked between batches (raising :class:`Cancelled`); ``progress``
    receives the fraction done after each. ``images`` replaces the drawn stimuli (same order, blank first) —
    for tests that transform the stimulus set.
    """
    grid = stimulus_grid(spec.orientations_deg, spec.cycles_per_image, spec.phases)
    total = len(grid) + 1
    reduce = _reducer(spec.response)
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    batches = math.ceil(total / spec.batch_size)
    for index in range(batches):
        if cancelled is not None and cancelled():
            raise Cancelled
        start, stop = index * spec.batch_size, min(total, (index + 1) * spec.batch_size)
        if images is not None:
            luminance = images[start:stop]
        else:
            luminance = np.stack(
                [
                    np.full((spec.size, spec.size), 0.5, dtype=np.float32)
                    if i == 0
                    else grating(
                        grid[i - 1], size=spec.size, kind=spec.stimulus, contrast=spec.contrast, sigma_px=spec.sigma_px
                    )
                    for i in range(start, stop)
                ]
            )
        with torch.inference_mode():
            recorded = record(module, layers, to_network_input(luminance, preprocess), reduce=reduce)
        for name in layers:
            collected[name].append(recorded[name])
        if progress is not None:
            progress((index + 1) / batches)
    return {name: torch.cat(parts).numpy() for name, parts in collected.items()}


def analyse_rates(name: str, rates: np.ndarray, spec: TuningSpec) -> LayerTuning:
    """Turn one layer's (stimuli, C) rates from :func:`measure` into tuning curves and indices."""
    orientations, frequencies = len(spec.orientations_deg), len(spec.cycles_per_image)
    evoked = rates[1:].reshape(orientations, frequencies, spec.phases, -1).mean(axis=2)  # (O, F, C)
    return tuning_from_responses(
        name, np.transpose(evoked, (2, 0, 1)), rates[0], spec.orientations_deg, spec.cycles_per_image
    )


@dataclass(frozen=True)
class OrientationTuning:
    """A finished experiment: the stimuli shown and every requested layer's tuning, stem to head."""

    model_id: str
    trained: bool
    spec: TuningSpec
    fov_deg: float
    layers: list[LayerTuning]
    labels: dict[str, str]

    def layer(self, name: str) -> LayerTuning:
        for tuning in self.layers:
            if tuning.name == name:
                return tuning
        raise KeyError(name)


def run_orientation_tuning(
    model: LoadedModel,
    layers: Sequence[str] | None,
    spec: TuningSpec,
    *,
    fov_deg: float,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> OrientationTuning:
    """Show ``spec``'s stimuli to ``model`` and return the tuning of every channel of ``layers`` (the card's
    curated layers when ``None``), in network order. Layers are recorded together, one forward per batch."""
    names = list(layers) if layers else [layer.name for layer in model.card.layers]
    resolve_layers(model.module, names, model.card.id)
    order = {name: index for index, (name, _) in enumerate(model.module.named_modules())}
    names.sort(key=order.__getitem__)
    started = time.perf_counter()
    rates = measure(model.module, model.card.preprocess, names, spec, progress=progress, cancelled=cancelled)
    logger.info(
        "orientation tuning of %s on %d layers, %d stimuli: %.1f s",
        model.card.id,
        len(names),
        spec.stimulus_count,
        time.perf_counter() - started,
    )
    labels = {layer.name: layer.label for layer in model.card.layers}
    return OrientationTuning(
        model_id=model.card.id,
        trained=model.trained,
        spec=spec,
        fov_deg=fov_deg,
        layers=[analyse_rates(name, rates[name], spec) for name in names],
        labels={name: labels.get(name, name) for name in names},
    )
