import io

import numpy as np
import pytest
from PIL import Image

from app.engine.cards import Preprocess
from app.engine.errors import ImageTooLarge, NotAnImage, UndecodableImage
from app.engine.imaging import prepare_image
from tests.conftest import encode, jpeg, photo

PRE = Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


def prepare(data: bytes, max_pixels: int = 40_000_000):
    return prepare_image(data, PRE, max_bytes=20_000_000, max_pixels=max_pixels)


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_a_photo_becomes_a_normalised_crop():
    prepared = prepare(jpeg("coffee"))
    assert (prepared.width, prepared.height, prepared.format) == (600, 400, "JPEG")
    assert prepared.view.size == (224, 224)
    assert prepared.tensor.shape == (1, 3, 224, 224)
    assert prepared.tensor.dtype.is_floating_point and -1.0 <= prepared.tensor.min() < prepared.tensor.max() <= 1.0


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1", "LA"])
def test_every_mode_becomes_rgb(mode):
    source = Image.fromarray(photo("chelsea"))
    if mode == "I;16":
        gray = np.asarray(source.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(gray)
        fmt = "PNG"
    else:
        image = source.convert(mode)
        fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    prepared = prepare(save(image, fmt))
    assert prepared.view.mode == "RGB"
    # 16-bit images are stretched, not clipped to white.
    assert np.asarray(prepared.view).std() > 10


def test_exif_orientation_is_honoured():
    upright = Image.fromarray(photo("coffee"))  # 600 × 400, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    prepared = prepare(save(upright, "JPEG", exif=exif.tobytes()))
    # The upright content is landscape; displayed per EXIF it is portrait, so the crop comes from a rotated image.
    rotated = prepare(save(upright.transpose(Image.Transpose.ROTATE_270), "JPEG"))
    difference = np.abs(np.asarray(prepared.view, float) - np.asarray(rotated.view, float)).mean()
    assert difference < 8


def test_animation_contributes_its_first_frame():
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    view = np.asarray(prepare(data).view)
    assert view[..., 0].mean() > 200 and view[..., 2].mean() < 60


def test_extreme_aspect_ratio_still_fills_the_input_at_bounded_cost():
    # Resizing the whole 1×100000 strip first would allocate 256 × 25.6 M pixels; only the crop box is resampled.
    prepared = prepare(encode(np.full((1, 100_000, 3), 128, np.uint8), "PNG"))
    assert prepared.view.size == (224, 224)
    assert np.asarray(prepared.view).mean() == pytest.approx(128, abs=1)


def test_refusals():
    with pytest.raises(UndecodableImage, match="empty"):
        prepare(b"")
    with pytest.raises(NotAnImage):
        prepare(b"<html>not a photo</html>")
    with pytest.raises(UndecodableImage, match="truncated"):
        prepare(jpeg("coffee")[:4000])
    with pytest.raises(ImageTooLarge, match="pixels"):
        prepare(save(Image.new("1", (20_000, 20_000)), "PNG"), max_pixels=40_000_000)


IMAGENET = Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.mark.parametrize("preprocess", [PRE, IMAGENET], ids=["lite", "imagenet"])
def test_the_batch_is_torchvisions_to_tensor_and_normalize_of_the_view_bit_for_bit(preprocess):
    import torch
    from torchvision.transforms import functional

    prepared = prepare_image(jpeg("chelsea"), preprocess, max_bytes=10**8, max_pixels=10**8)
    expected = functional.normalize(functional.to_tensor(prepared.view), preprocess.mean, preprocess.std)
    assert torch.equal(prepared.tensor, expected.unsqueeze(0))
