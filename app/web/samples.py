"""Sample images for the home page gallery: real photos from scikit-image and generated visual stimuli.

Nothing is stored on disk: each image is made on first request and kept in memory, so a fresh install works
offline and the repository holds no image files.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

THUMB_PX = 240
STIMULUS_PX = 256
GRATING_CYCLES = 8  # cycles across the stimulus: coarse enough to survive the thumbnail and the model's resize


@dataclass(frozen=True)
class Sample:
    name: str
    title: str
    alt: str
    kind: Literal["photo", "stimulus"]

    @property
    def extension(self) -> str:
        # Photos are JPEGs like most uploads; stimuli are PNGs so their sharp edges are not blurred by JPEG.
        return "jpg" if self.kind == "photo" else "png"

    @property
    def media_type(self) -> str:
        return "image/jpeg" if self.kind == "photo" else "image/png"

    @property
    def url(self) -> str:
        return f"/samples/{self.name}.{self.extension}"

    @property
    def thumbnail_url(self) -> str:
        return f"/samples/thumbs/{self.name}.{self.extension}"


def _grating(orientation: int) -> Sample:
    direction = {0: "vertical", 45: "tilted 45°", 90: "horizontal", 135: "tilted 135°"}[orientation]
    return Sample(
        name=f"grating-{orientation}",
        title=f"Grating {orientation}°",
        alt=f"Sinusoidal black-and-white grating with {direction} stripes",
        kind="stimulus",
    )


SAMPLES: dict[str, Sample] = {
    sample.name: sample
    for sample in (
        Sample("coffee", "Coffee", "A cup of coffee on a saucer, seen from above", "photo"),
        Sample("chelsea", "Chelsea", "Chelsea, a tabby cat, looking to the side", "photo"),
        Sample("astronaut", "Astronaut", "Portrait of astronaut Eileen Collins in front of a flag", "photo"),
        Sample("rocket", "Rocket", "A rocket on its launch pad under a blue sky", "photo"),
        *(_grating(orientation) for orientation in (0, 45, 90, 135)),
        Sample("checkerboard", "Checkerboard", "Black-and-white checkerboard of eight by eight squares", "stimulus"),
    )
}


def sample_by_file(filename: str) -> Sample | None:
    """The sample served as ``filename`` (``coffee.jpg``, ``grating-45.png``), or None."""
    name, _, extension = filename.rpartition(".")
    sample = SAMPLES.get(name)
    return sample if sample is not None and sample.extension == extension else None


def _pixels(sample: Sample) -> np.ndarray:
    if sample.kind == "photo":
        import skimage.data

        return np.asarray(getattr(skimage.data, sample.name)(), dtype=np.uint8)
    y, x = np.mgrid[0:STIMULUS_PX, 0:STIMULUS_PX].astype(np.float64) / STIMULUS_PX
    if sample.name == "checkerboard":
        squares = 8
        grey = ((np.floor(x * squares) + np.floor(y * squares)) % 2) * 255.0
    else:
        # 0° gives vertical stripes (luminance varies along x); larger angles turn them counter-clockwise.
        theta = math.radians(int(sample.name.removeprefix("grating-")))
        phase = 2 * math.pi * GRATING_CYCLES * (x * math.cos(theta) - y * math.sin(theta))
        grey = 127.5 + 127.5 * np.sin(phase)
    channel = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.stack([channel] * 3, axis=-1)


def _encode(image: Image.Image, sample: Sample) -> bytes:
    buffer = io.BytesIO()
    if sample.kind == "photo":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@lru_cache(maxsize=len(SAMPLES))
def sample_bytes(name: str) -> bytes:
    """The encoded image analysed when the sample is chosen (``KeyError`` for an unknown name)."""
    sample = SAMPLES[name]
    return _encode(Image.fromarray(_pixels(sample)), sample)


@lru_cache(maxsize=len(SAMPLES))
def thumbnail_bytes(name: str) -> bytes:
    """A square thumbnail of the sample for the gallery (``KeyError`` for an unknown name)."""
    sample = SAMPLES[name]
    image = Image.fromarray(_pixels(sample))
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return _encode(square.resize((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS), sample)
