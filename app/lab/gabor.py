"""Fit a two-dimensional Gabor function to a receptive field, as Jones & Palmer (1987) did for V1 simple cells.

The model, in pixel coordinates centred on the patch with y pointing up::

    x' =  (x − x0) cos θ + (y − y0) sin θ          across the stripes
    y' = −(x − x0) sin θ + (y − y0) cos θ          along the stripes
    g  = A · exp(−x'²/2σx² − y'²/2σy²) · cos(2π f x' + φ) + c

Nine parameters; a Gaussian blob is the special case f = 0. Fits are least squares
(:func:`scipy.optimize.least_squares`, trust-region reflective, bounded, a fixed evaluation budget) from two
starts: the spectrum's peak (frequency and direction) with the energy centroid and spread (position and size),
and a blob (f = 0); at each start the amplitude, phase and offset are solved exactly by linear least squares.
The fit quality is R² = 1 − SS_residual / SS_total, the fraction of the field's variance the Gabor explains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

R2_GOOD = 0.5
"""A field counts as "well fit by a Gabor" at R² ≥ 0.5: the Gabor explains at least half its variance."""

_MAX_EVALUATIONS = 200


@dataclass(frozen=True)
class GaborFit:
    """The fitted parameters (pixels, degrees), the quality of the fit and the fitted patch itself."""

    amplitude: float
    x0: float
    y0: float
    sigma_x: float
    sigma_y: float
    orientation_deg: float  # stripe angle, counter-clockwise from horizontal, in [0, 180)
    cycles_per_pixel: float
    phase_deg: float
    offset: float
    r2: float
    fitted: np.ndarray  # same shape as the field


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, columns = shape
    x = np.arange(columns, dtype=np.float64) - (columns - 1) / 2
    y = (rows - 1) / 2 - np.arange(rows, dtype=np.float64)
    return np.broadcast_to(x[None, :], shape), np.broadcast_to(y[:, None], shape)


def gabor(shape: tuple[int, int], params: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """The Gabor with ``params`` = (A, x0, y0, σx, σy, θ rad, f cycles/px, φ rad, c) on a grid of ``shape``;
    θ is the direction across the stripes (the stripes run at θ + 90°)."""
    amplitude, x0, y0, sigma_x, sigma_y, theta, frequency, phase, offset = params
    x, y = _grid(shape)
    dx, dy = x - x0, y - y0
    across = dx * math.cos(theta) + dy * math.sin(theta)
    along = -dx * math.sin(theta) + dy * math.cos(theta)
    envelope = np.exp(-(across**2) / (2 * sigma_x**2) - along**2 / (2 * sigma_y**2))
    return amplitude * envelope * np.cos(2 * math.pi * frequency * across + phase) + offset


def _jacobian(shape: tuple[int, int], params: np.ndarray) -> np.ndarray:
    # Analytic derivatives: a finite-difference Jacobian would cost nine extra evaluations per step.
    amplitude, x0, y0, sigma_x, sigma_y, theta, frequency, phase, _ = params
    x, y = _grid(shape)
    dx, dy = x - x0, y - y0
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    across = dx * cos_t + dy * sin_t
    along = -dx * sin_t + dy * cos_t
    envelope = np.exp(-(across**2) / (2 * sigma_x**2) - along**2 / (2 * sigma_y**2))
    omega = 2 * math.pi * frequency
    carrier = np.cos(omega * across + phase)
    quadrature = np.sin(omega * across + phase)
    d_across = amplitude * envelope * (-across / sigma_x**2 * carrier - omega * quadrature)
    d_along = amplitude * envelope * carrier * (-along / sigma_y**2)
    columns = [
        envelope * carrier,
        -d_across * cos_t + d_along * sin_t,
        -d_across * sin_t - d_along * cos_t,
        amplitude * envelope * carrier * across**2 / sigma_x**3,
        amplitude * envelope * carrier * along**2 / sigma_y**3,
        d_across * along - d_along * across,
        -amplitude * envelope * quadrature * 2 * math.pi * across,
        -amplitude * envelope * quadrature,
        np.ones(shape),
    ]
    return np.stack([column.ravel() for column in columns], axis=1)


def _linear_start(field: np.ndarray, x0: float, y0: float, sigma: float, theta: float, frequency: float) -> np.ndarray:
    # With the envelope and carrier fixed, A cos(ωx' + φ) + c = a·E cos ωx' + b·E sin ωx' + c is linear in a, b, c.
    x, y = _grid(field.shape)
    dx, dy = x - x0, y - y0
    across = dx * math.cos(theta) + dy * math.sin(theta)
    envelope = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    omega = 2 * math.pi * frequency * across
    design = np.stack([envelope * np.cos(omega), envelope * np.sin(omega), np.ones_like(envelope)], axis=-1)
    (a, b, c), *_ = np.linalg.lstsq(design.reshape(-1, 3), field.reshape(-1), rcond=None)
    amplitude = math.hypot(a, b)
    phase = math.atan2(-b, a)  # a cos + b sin = A cos(· + φ) with A cos φ = a, −A sin φ = b
    return np.array([amplitude, x0, y0, sigma, sigma, theta, frequency, phase, c])


def _starts(field: np.ndarray) -> list[np.ndarray]:
    rows, columns = field.shape
    centred = field - field.mean()
    energy = centred**2
    total = energy.sum()
    x, y = _grid(field.shape)
    if total <= 0:
        return [np.array([0.0, 0.0, 0.0, columns / 4, rows / 4, 0.0, 0.0, 0.0, float(field.mean())])]
    x0, y0 = float((energy * x).sum() / total), float((energy * y).sum() / total)
    spread = float((energy * ((x - x0) ** 2 + (y - y0) ** 2)).sum() / total) / 2  # per-axis variance of E²
    # The squared envelope has half the Gaussian's variance, hence σ ≈ √(2·var).
    sigma = float(np.clip(math.sqrt(2 * spread), 1.0, max(rows, columns)))
    # Spectrum peak on a zero-padded grid for a finer frequency estimate; y-up axes so θ matches the model.
    size = 4 * max(rows, columns)
    spectrum = np.abs(np.fft.fft2(centred[::-1, :], s=(size, size)))
    spectrum[0, 0] = 0
    row, column = np.unravel_index(int(np.argmax(spectrum)), spectrum.shape)
    fy = (row if row < size // 2 else row - size) / size
    fx = (column if column < size // 2 else column - size) / size
    frequency = math.hypot(fx, fy)
    theta = math.atan2(fy, fx)
    starts = [_linear_start(field, x0, y0, sigma, theta, frequency)]
    starts.append(_linear_start(field, x0, y0, sigma, 0.0, 0.0))
    return starts


def _bounds(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, columns = shape
    half_x, half_y = columns / 2, rows / 2
    big = 2.0 * max(rows, columns)
    lower = np.array([0.0, -half_x, -half_y, 0.5, 0.5, -4 * math.pi, 0.0, -4 * math.pi, -np.inf])
    upper = np.array([np.inf, half_x, half_y, big, big, 4 * math.pi, 0.5, 4 * math.pi, np.inf])
    return lower, upper


def r_squared(field: np.ndarray, fitted: np.ndarray) -> float:
    """Fraction of the field's variance explained by ``fitted`` (can be negative for a fit worse than flat)."""
    total = float(((field - field.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    return 1.0 - float(((field - fitted) ** 2).sum()) / total


def fit_gabor(field: np.ndarray) -> GaborFit:
    """The least-squares Gabor for a 2-D ``field`` (any scale; it is normalised internally and scaled back)."""
    # Imported on first use: SciPy's optimiser is half a second of every server's start-up, for the lab alone.
    from scipy.optimize import least_squares

    values = np.asarray(field, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError("a receptive field to fit must be 2-D")
    scale = float(np.abs(values).max()) or 1.0
    values = values / scale
    lower, upper = _bounds(values.shape)
    best: np.ndarray | None = None
    best_cost = math.inf
    for start in _starts(values):
        start = np.clip(start, lower + 1e-9, upper - 1e-9)
        solution = least_squares(
            lambda p: (gabor(values.shape, p) - values).ravel(),
            start,
            jac=lambda p: _jacobian(values.shape, p),
            bounds=(lower, upper),
            method="trf",
            max_nfev=_MAX_EVALUATIONS,
            x_scale="jac",
        )
        if solution.cost < best_cost:
            best, best_cost = solution.x, float(solution.cost)
    assert best is not None
    amplitude, x0, y0, sigma_x, sigma_y, theta, frequency, phase, offset = (float(v) for v in best)
    fitted = gabor(values.shape, best)
    return GaborFit(
        amplitude=amplitude * scale,
        x0=x0,
        y0=y0,
        sigma_x=sigma_x,
        sigma_y=sigma_y,
        orientation_deg=(math.degrees(theta) + 90.0) % 180.0,
        cycles_per_pixel=frequency,
        phase_deg=math.degrees(phase) % 360.0,
        offset=offset * scale,
        r2=r_squared(values, fitted),
        fitted=fitted * scale,
    )
