"""PNG pictures of the lab: filters and receptive fields as tile grids, and heat maps over photos."""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from matplotlib import colormaps  # the colour table only, imported at start-up; no figure or pyplot state
from PIL import Image

_GAP = 2
_BACKGROUND = (255, 255, 255)


def _encode(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of a near-square grid of ``count`` tiles, filled row by row."""
    columns = math.ceil(math.sqrt(count)) if count else 0
    return columns, (math.ceil(count / columns) if columns else 0)


def symmetric(tile: np.ndarray) -> np.ndarray:
    """Scale a signed array to 0–1 symmetrically around 0 (0 → mid-grey), by its own largest magnitude."""
    peak = float(np.abs(tile).max())
    return 0.5 + 0.5 * tile / peak if peak > 0 else np.full_like(tile, 0.5, dtype=np.float64)


def zoom_for(side: int, target: int = 48) -> int:
    """The integer enlargement that makes a ``side``-px tile about ``target`` px, so small kernels are legible."""
    return max(1, round(target / side))


def tiles_png(tiles: np.ndarray, *, zoom: int | None = None) -> bytes:
    """A grid of signed tiles, each scaled symmetrically around 0: (N, 3, h, w) as colour, (N, h, w) as grey.

    Pixels are enlarged by whole numbers (nearest neighbour), so each weight stays one crisp square.
    """
    array = np.asarray(tiles, dtype=np.float64)
    if array.ndim == 3:
        array = array[:, None]
    count, _, height, width = array.shape
    zoom = zoom or zoom_for(max(height, width))
    columns, rows = grid_shape(count)
    tile_h, tile_w = height * zoom, width * zoom
    sheet = np.empty((rows * (tile_h + _GAP) + _GAP, columns * (tile_w + _GAP) + _GAP, 3), dtype=np.uint8)
    sheet[:] = _BACKGROUND
    for index, tile in enumerate(array):
        rgb = np.repeat(symmetric(tile), 3, axis=0) if tile.shape[0] == 1 else symmetric(tile)
        image = (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
        row, column = divmod(index, columns)
        top, left = _GAP + row * (tile_h + _GAP), _GAP + column * (tile_w + _GAP)
        sheet[top : top + tile_h, left : left + tile_w] = image
    return _encode(sheet)


def pairs_png(first: np.ndarray, second: np.ndarray, *, zoom: int | None = None) -> bytes:
    """A grid of side-by-side pairs of grey tiles (for example a field's profile and its Gabor fit), both members
    of a pair scaled by the pair's common largest magnitude so they can be compared by eye."""
    count, height, width = first.shape
    zoom = zoom or zoom_for(max(height, width))
    joined = np.zeros((count, height, 2 * width + 1))
    for index in range(count):
        peak = max(float(np.abs(first[index]).max()), float(np.abs(second[index]).max())) or 1.0
        joined[index, :, :width] = first[index] / peak
        joined[index, :, width + 1 :] = second[index] / peak
    return _pairs_sheet(joined, width, zoom)


def _pairs_sheet(joined: np.ndarray, width: int, zoom: int) -> bytes:
    count, height, full_width = joined.shape
    columns, rows = grid_shape(count)
    tile_h, tile_w = height * zoom, full_width * zoom
    sheet = np.empty((rows * (tile_h + _GAP) + _GAP, columns * (tile_w + _GAP) + _GAP, 3), dtype=np.uint8)
    sheet[:] = _BACKGROUND
    for index, tile in enumerate(joined):
        grey = (np.clip(0.5 + 0.5 * tile, 0, 1) * 255).round().astype(np.uint8)
        grey[:, width] = 255  # white seam between the two members
        image = np.repeat(grey[:, :, None], 3, axis=2).repeat(zoom, axis=0).repeat(zoom, axis=1)
        row, column = divmod(index, columns)
        top, left = _GAP + row * (tile_h + _GAP), _GAP + column * (tile_w + _GAP)
        sheet[top : top + tile_h, left : left + tile_w] = image
    return _encode(sheet)


@lru_cache(maxsize=1)
def _inferno() -> np.ndarray:

    return (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)


def heat_overlay_png(view: np.ndarray, heat: np.ndarray) -> bytes:
    """The (H, W, 3) uint8 photo with a (H, W) non-negative heat map laid over it (inferno colours).

    Opacity follows the heat (up to 60% at the peak), so cold regions show the photo as it is.
    """
    peak = float(heat.max())
    level = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
    colours = _inferno()[(level * 255).round().astype(np.int64)]
    alpha = (0.6 * level)[:, :, None]
    blended = view.astype(np.float32) * (1 - alpha) + colours * alpha
    return _encode(np.clip(blended, 0, 255).round().astype(np.uint8))
