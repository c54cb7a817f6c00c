"""Activation maps to PNG: 8-bit palette images with a viridis palette, normalised per channel."""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

# Palette index 255 is reserved for the transparent gaps between atlas tiles; maps use 0..254.
_LEVELS = 255
_GAP = 255


def _viridis_palette() -> list[int]:
    colours = colormaps["viridis"](np.linspace(0.0, 1.0, _LEVELS))[:, :3]
    rgb = (colours * 255).round().astype(np.uint8).reshape(-1).tolist()
    return rgb + [0, 0, 0]


# Built at import, in the thread that starts the app: a lazy first import of matplotlib from many render threads at
# once could race, and a failed render leaves an image broken in the browser.
_PALETTE = _viridis_palette()


def normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each (H, W) map of a (C, H, W) array to 0..254 by its own min and max (flat maps become 0).

    NumPy rather than torch, down to the indexing: renders run on the web server's threads, and each thread that
    calls torch gets an OpenMP team of its own whose idle spinning would slow the inference threads on the same cores.
    """
    flat = maps.reshape(maps.shape[0], -1).astype(np.float32, copy=False)
    low = flat.min(axis=1, keepdims=True)
    span = np.maximum(flat.max(axis=1, keepdims=True) - low, np.float32(1e-12))
    levels = np.rint((flat - low) / span * np.float32(_LEVELS - 1)).astype(np.uint8)
    return levels.reshape(maps.shape)


def _encode(levels: np.ndarray, transparent_gaps: bool = False) -> bytes:
    height, width = levels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(levels).tobytes())
    image.putpalette(_PALETTE)
    buffer = io.BytesIO()
    # Level 1 with run-length matching only: these maps are fetched once, over a fast link, so encoding time matters
    # more than the last bytes (a 16-tile atlas of 112×112 maps: 3.7 -> 1.9 ms for 5% more bytes).
    options: dict[str, object] = {"compress_level": 1, "compress_type": zlib.Z_RLE}
    if transparent_gaps:
        options["transparency"] = _GAP
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def channel_png(activation: torch.Tensor) -> bytes:
    """One (H, W) map as a palette PNG at its native resolution (the browser scales it without blur)."""
    return _encode(normalise(activation.numpy()[np.newaxis])[0])


def atlas_png(activations: torch.Tensor, channels: list[int]) -> bytes:
    """A near-square grid of the given channels of a (C, H, W) tensor, 1-px transparent gaps between tiles."""
    levels = normalise(activations.numpy()[channels])
    count, height, width = levels.shape
    columns, rows = atlas_grid(count)
    sheet = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), _GAP, dtype=np.uint8)
    for tile, level in enumerate(levels):
        row, column = divmod(tile, columns)
        top, left = row * (height + 1), column * (width + 1)
        sheet[top : top + height, left : left + width] = level
    return _encode(sheet, transparent_gaps=True)


def atlas_grid(count: int) -> tuple[int, int]:
    """(columns, rows) of the atlas grid for ``count`` tiles, so clients can map a click to a channel."""
    columns = math.ceil(math.sqrt(count)) if count else 0
    return columns, (math.ceil(count / columns) if columns else 0)
