"""Per-layer statistics of one image's activations, computed in one vectorised pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TOP_CHANNELS = 16


@dataclass(frozen=True)
class LayerStats:
    mean: float
    max: float
    sparsity: float
    channel_means: np.ndarray  # (C,) float32
    channel_maxes: np.ndarray  # (C,) float32
    top_channels: list[int]  # indices, most active first


def layer_stats(activation: torch.Tensor, top: int = TOP_CHANNELS) -> LayerStats:
    """Mean, max, sparsity (share of values ≤ 0) and the channels with the highest mean, of a (C, H, W) tensor.

    In NumPy: a third of the time of the same reductions in torch on these small maps, and no torch call that could
    give the calling thread an OpenMP team of its own (see ``app.engine.inference_pool``).
    """
    flat = activation.numpy().reshape(activation.shape[0], -1)
    channel_means = flat.mean(axis=1, dtype=np.float32)
    channel_maxes = flat.max(axis=1)
    positive = np.count_nonzero(flat > 0)
    return LayerStats(
        mean=float(channel_means.mean()),
        max=float(channel_maxes.max()),
        sparsity=1.0 - positive / flat.size,
        channel_means=channel_means,
        channel_maxes=channel_maxes,
        top_channels=channels_by_activation(channel_means)[:top],
    )


def channels_by_activation(channel_means: np.ndarray) -> list[int]:
    """All channel indices sorted by mean activation, most active first (ties: the lower index first)."""
    return np.argsort(-channel_means, kind="stable").tolist()
