"""Layer statistics, taken piece by piece, are those of the whole layer."""

import numpy as np
import pytest
import torch

from app.engine.stats import CHUNK_BYTES, layer_stats

SHAPES = [
    (32, 112, 112),  # several pieces of rows
    (1280, 7, 7),  # many small channels
    (3, 300, 300),  # one channel larger than a piece
    (1000, 1, 1),  # a fully connected layer
    (1, 1, 1),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_statistics_equal_those_of_whole_layer_reductions(shape: tuple[int, int, int]) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    activation = torch.randn(*shape, generator=generator).clamp_(min=-0.5)
    flat = activation.numpy().reshape(shape[0], -1)

    stats = layer_stats(activation)

    np.testing.assert_array_equal(stats.channel_means, flat.mean(axis=1, dtype=np.float32))
    np.testing.assert_array_equal(stats.channel_maxes, flat.max(axis=1))
    assert stats.sparsity == pytest.approx(float((activation <= 0).sum()) / activation.numel(), abs=1e-12)
    assert stats.max == float(activation.max())
    assert stats.mean == pytest.approx(float(activation.mean()), rel=1e-4, abs=1e-6)
    expected_top = torch.argsort(-activation.mean(dim=(1, 2)), stable=True)[:16].tolist()
    assert stats.top_channels == expected_top


def test_the_pieces_are_smaller_than_the_layers_tested() -> None:
    assert CHUNK_BYTES < 32 * 112 * 112 * 4 and CHUNK_BYTES < 300 * 300 * 4 * 3
