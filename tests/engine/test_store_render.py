import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from app.engine import render
from app.engine.store import AnalysisStore


@dataclass
class Item:
    id: str
    nbytes: int


def test_store_evicts_least_recently_used_by_bytes():
    store = AnalysisStore[Item](100)
    for key in "abc":
        store.put(Item(key, 40))
    assert store.get("a") is None and store.get("b") is not None
    store.put(Item("d", 40))  # "c" is now the least recently used
    assert store.get("c") is None and store.get("b") is not None
    assert store.total_bytes <= 100


def test_store_remeasures_items_that_grow():
    store = AnalysisStore[Item](100)
    first, second = Item("a", 30), Item("b", 30)
    store.put(first)
    store.put(second)
    second.nbytes = 90
    store.remeasure("b")
    assert store.get("a") is None and store.total_bytes == 90


def test_channel_png_is_a_viridis_palette_image_normalised_per_channel():
    ramp = torch.arange(16.0).reshape(4, 4) * 1000
    image = Image.open(io.BytesIO(render.channel_png(ramp)))
    assert image.mode == "P" and image.size == (4, 4)
    levels = np.asarray(image)
    assert levels.min() == 0 and levels.max() == 254
    palette = image.getpalette()
    assert palette is not None
    assert tuple(palette[0:3]) == (68, 1, 84)  # viridis starts dark purple …
    assert tuple(palette[254 * 3 : 254 * 3 + 3]) == (253, 231, 37)  # … and ends yellow


def test_atlas_tiles_the_chosen_channels_in_a_grid():
    maps = torch.rand(20, 7, 7)
    image = Image.open(io.BytesIO(render.atlas_png(maps, list(range(10)))))
    assert render.atlas_grid(10) == (4, 3)
    assert image.size == (4 * 8 - 1, 3 * 8 - 1)
    assert image.info.get("transparency") == 255
