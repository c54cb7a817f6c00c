"""Per-layer statistics of one image's activations, computed in one vectorised pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOP_CHANNELS = 16


@dataclass(frozen=True)
class LayerStats:
    mean: float
    max: float
    sparsity: float
    channel_means: torch.Tensor  # (C,) float32
    channel_maxes: torch.Tensor  # (C,) float32
    top_channels: list[int]  # indices, most active first


def layer_stats(activation: torch.Tensor, top: int = TOP_CHANNELS) -> LayerStats:
    """Mean, max, sparsity (share of values ≤ 0) and the channels with the highest mean, of a (C, H, W) tensor."""
    flat = activation.reshape(activation.shape[0], -1)
    channel_means = flat.mean(dim=1)
    channel_maxes = flat.amax(dim=1)
    order = torch.topk(channel_means, k=min(top, channel_means.numel())).indices
    return LayerStats(
        mean=float(channel_means.mean()),
        max=float(channel_maxes.max()),
        sparsity=float((flat <= 0).float().mean()),
        channel_means=channel_means,
        channel_maxes=channel_maxes,
        top_channels=[int(i) for i in order],
    )


def channels_by_activation(stats: LayerStats) -> list[int]:
    """All channel indices sorted by mean activation, most active first."""
    return [int(i) for i in torch.argsort(stats.channel_means, descending=True)]
