"""Property-based: any size, mode and format we accept becomes the network's 224×224 RGB input, and only the pixel
limit decides between analysed and refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.engine.cards import Preprocess
from app.engine.errors import ImageTooLarge
from app.engine.imaging import prepare_image
from tests.conftest import photo

PRE = Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic")
MODES_OF = {
    "JPEG": ["L", "RGB", "CMYK"],
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "GIF": ["P", "L"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
}
ALL = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(photo("astronaut"))


def make(source: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    picture = source.resize(size)
    if mode in ("I;16", "I", "F"):
        gray = np.asarray(picture.convert("L"), dtype=np.float64)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray((gray * 200 - 100 * (mode != "I;16")).astype(dtype))
    return picture.convert(mode)


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


formats_and_modes = st.sampled_from(sorted(MODES_OF)).flatmap(
    lambda fmt: st.tuples(st.just(fmt), st.sampled_from(MODES_OF[fmt]))
)
sides = st.integers(1, 700)


@ALL
@given(format_mode=formats_and_modes, width=sides, height=sides, orientation=st.sampled_from([1, 3, 6, 8]))
def test_every_accepted_image_becomes_the_network_input(astronaut, format_mode, width, height, orientation):
    fmt, mode = format_mode
    options: dict[str, object] = {}
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    prepared = prepare_image(
        save(make(astronaut, (width, height), mode), fmt, **options), PRE, max_bytes=10**8, max_pixels=10**8
    )
    turned = fmt == "JPEG" and orientation in (6, 8)
    assert (prepared.width, prepared.height) == ((height, width) if turned else (width, height))
    assert prepared.format == fmt
    assert prepared.view.mode == "RGB" and prepared.view.size == (224, 224)
    assert prepared.tensor.shape == (1, 3, 224, 224) and bool(prepared.tensor.isfinite().all())
    # Normalised per the card: 0..255 maps into [(0 − mean) / std, (1 − mean) / std] for each channel.
    assert float(prepared.tensor.min()) >= (0 - 0.485) / 0.229 - 1e-4
    assert float(prepared.tensor.max()) <= (1 - 0.406) / 0.225 + 1e-4


@ALL
@given(width=st.integers(1, 400), height=st.integers(1, 400), slack=st.integers(-2_000, 2_000))
def test_the_pixel_limit_alone_decides(width, height, slack):
    data = save(Image.new("RGB", (width, height), (40, 80, 120)), "PNG")
    limit = max(1, width * height + slack)
    if width * height > limit:
        with pytest.raises(ImageTooLarge, match=f"{width}×{height} = {width * height:,} pixels"):
            prepare_image(data, PRE, max_bytes=10**8, max_pixels=limit)
    else:
        assert prepare_image(data, PRE, max_bytes=10**8, max_pixels=limit).view.size == (224, 224)
