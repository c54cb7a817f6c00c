"""Distinct real photos on demand: random crops of scikit-image's photos, flipped, rescaled and brightened."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.conftest import PHOTOS, photo


def distinct_jpegs(count: int, seed: int = 0, max_side: int = 640) -> list[bytes]:
    """``count`` JPEGs that differ from each other (so none is answered from the analysis store)."""
    rng = np.random.default_rng(seed)
    sources = [photo(name) for name in PHOTOS]
    images = []
    for index in range(count):
        source = sources[index % len(sources)]
        height, width = source.shape[:2]
        crop_height = int(rng.integers(height // 2, height + 1))
        crop_width = int(rng.integers(width // 2, width + 1))
        top, left = int(rng.integers(0, height - crop_height + 1)), int(rng.integers(0, width - crop_width + 1))
        crop = source[top : top + crop_height, left : left + crop_width].astype(np.float32) * rng.uniform(0.7, 1.2)
        picture = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
        if rng.random() < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scale = min(1.0, max_side / max(picture.size)) * rng.uniform(0.6, 1.0)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(70, 95)))
        images.append(buffer.getvalue())
    return images
