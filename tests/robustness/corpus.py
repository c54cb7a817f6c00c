"""A corpus of hostile and odd uploads, built in memory from real photos (nothing binary is committed).

Each sample says what the API must answer: valid-but-odd images are analysed (201), everything else is refused
with a 4xx whose ``detail`` starts with a stable sentence. ``docs/robustness.md`` lists the same table.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageCms

from tests.conftest import encode, jpeg, photo

NOT_AN_IMAGE = "the file is not an image in a format we can read"
UNDECODABLE = "the image could not be decoded"
TOO_MANY_PIXELS = "the image is "
EMPTY = "the uploaded file is empty"


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes = b""
    filename: str = "photo.jpg"
    mime: str = "image/jpeg"
    status: int = 201
    detail: str = ""  # how the refusal's sentence starts (refusals only)
    size: tuple[int, int] | None = None  # the width × height the analysis must report (analysed samples only)

    @property
    def analysed(self) -> bool:
        return self.status == 201


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def chelsea(size: tuple[int, int] = (300, 200)) -> Image.Image:
    return Image.fromarray(photo("chelsea")).resize(size)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header promises ``width × height`` RGB pixels, in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


def gif_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF with a huge logical screen and a huge first frame, in 40 bytes."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00" + b"\x3b"


def webp_bomb() -> bytes:
    """An animated WebP whose canvas (VP8X chunk) claims 16384 × 16384 pixels around two tiny frames."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    data = bytearray(save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True))
    at = data.index(b"VP8X") + 8 + 4  # flags (4 bytes), then canvas width − 1 and height − 1 as 24-bit integers
    data[at : at + 6] = (16_383).to_bytes(3, "little") * 2
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to claim 65500 × 65500 pixels."""
    data = bytearray(save(chelsea((64, 64)), "JPEG", quality=80))
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height and width
    data[at : at + 4] = struct.pack(">HH", 65_500, 65_500)
    return bytes(data)


def bmp_bomb() -> bytes:
    """A BMP header claiming 100000 × 100000 1-bit pixels over 16 bytes of data."""
    info = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 1, 0, 0, 2835, 2835, 2, 0)
    palette = b"\0\0\0\0\xff\xff\xff\0"
    body = b"\0" * 16
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def tiff_bomb() -> bytes:
    """A little-endian TIFF whose directory claims 100000 × 100000 8-bit gray pixels in one tiny strip."""
    entries = [
        (256, 4, 1, 100_000),  # ImageWidth, LONG
        (257, 4, 1, 100_000),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample, SHORT
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 1),  # BlackIsZero
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the directory
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 100_000),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    directory = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        directory += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\0" + struct.pack("<I", 8) + directory + struct.pack("<I", 0) + b"\0" * 16


def png_text_bomb() -> bytes:
    """A valid small PNG carrying a zTXt chunk that inflates to 64 MB."""
    data = save(chelsea((32, 32)), "PNG")
    bomb = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 64_000_000, 9))
    at = data.index(b"IDAT") - 4
    return data[:at] + bomb + data[at:]


def corrupt(data: bytes, start: float, count: int = 64, seed: int = 0) -> bytes:
    """``data`` with ``count`` bytes overwritten by noise from ``start`` (a fraction of the length) on."""
    rng = np.random.default_rng(seed)
    at = int(len(data) * start)
    noise = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    return data[:at] + noise + data[at + count :]


def bad_png_crc() -> bytes:
    data = bytearray(save(chelsea(), "PNG"))
    at = data.index(b"IDAT") + 4 + 100
    data[at] ^= 0xFF  # the chunk's CRC no longer matches
    return bytes(data)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", jpeg("coffee")[:1000])
    return buffer.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90° clockwise (portrait)
    return save(chelsea((300, 200)), "JPEG", exif=exif.tobytes(), quality=90)


def with_icc_profile() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return save(chelsea(), "JPEG", icc_profile=profile, quality=90)


def sixteen_bit_gray() -> bytes:
    gray = np.asarray(chelsea().convert("L"), dtype=np.uint16) * 257
    return save(Image.fromarray(gray), "PNG")


def float_tiff() -> bytes:
    gray = np.asarray(chelsea().convert("L"), dtype=np.float32) / 255.0
    return save(Image.fromarray(gray, mode="F"), "TIFF")


def palette_with_transparency() -> bytes:
    image = chelsea().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return save(image, "PNG", transparency=0)


def animated(fmt: str) -> bytes:
    frames = [chelsea(), chelsea().transpose(Image.Transpose.FLIP_LEFT_RIGHT), chelsea().convert("L").convert("RGB")]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    b'<script>alert(1)</script><circle cx="50" cy="50" r="40"/></svg>'
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke showpage\n"


@cache
def corpus() -> tuple[Sample, ...]:
    """Every sample, built once per test session (about a second)."""
    coffee = jpeg("coffee")
    png = save(chelsea(), "PNG")
    gif = save(chelsea(), "GIF")
    webp = save(chelsea(), "WEBP", quality=80)
    refused = [
        Sample("empty file", b"", status=422, detail=EMPTY),
        Sample("one byte", b"\xff", status=415, detail=NOT_AN_IMAGE),
        Sample("plain text named .jpg", b"just some text, not a photo\n" * 10, status=415, detail=NOT_AN_IMAGE),
        Sample("HTML with a script, as image/png", HTML, "x.png", "image/png", 415, NOT_AN_IMAGE),
        Sample("SVG with a script", SVG, "drawing.svg", "image/svg+xml", 415, NOT_AN_IMAGE),
        Sample("PDF named .jpg", PDF, status=415, detail=NOT_AN_IMAGE),
        Sample("ZIP named .jpg", zip_bytes(), status=415, detail=NOT_AN_IMAGE),
        # Pillow can open EPS, but only by running Ghostscript on it: outside the formats we accept.
        Sample("PostScript (EPS)", EPS, "photo.eps", "image/jpeg", 415, NOT_AN_IMAGE),
        Sample(
            "ICO (a format outside the accepted list)",
            save(chelsea((64, 64)), "ICO"),
            "x.ico",
            "image/x-icon",
            415,
            NOT_AN_IMAGE,
        ),
        Sample("JPEG, first 3000 bytes", coffee[:3000], status=422, detail=UNDECODABLE),
        Sample("JPEG, header only", coffee[:200], status=422, detail=UNDECODABLE),
        Sample("PNG, first half", png[: len(png) // 2], "x.png", "image/png", 422, UNDECODABLE),
        Sample("PNG, broken chunk CRC", bad_png_crc(), "x.png", "image/png", 422, UNDECODABLE),
        Sample("GIF, first half", gif[: len(gif) // 2], "x.gif", "image/gif", 422, UNDECODABLE),
        Sample("WebP, first half", webp[: len(webp) // 2], "x.webp", "image/webp", 422, UNDECODABLE),
        Sample("PNG with a zTXt chunk that inflates to 64 MB", png_text_bomb(), "x.png", "image/png", 422, UNDECODABLE),
        Sample(
            "PNG bomb, IHDR says 100000×100000",
            png_bomb(100_000, 100_000),
            "x.png",
            "image/png",
            413,
            "the image is 100000×100000 = 10,000,000,000 pixels; the limit is 40,000,000 pixels",
        ),
        Sample("GIF bomb, 65535×65535 screen", gif_bomb(), "x.gif", "image/gif", 413, TOO_MANY_PIXELS),
        Sample("WebP bomb, 16384×16384 canvas", webp_bomb(), "x.webp", "image/webp", 413, TOO_MANY_PIXELS),
        Sample("JPEG bomb, SOF says 65500×65500", jpeg_bomb(), status=413, detail=TOO_MANY_PIXELS),
        Sample("BMP bomb, 100000×100000", bmp_bomb(), "x.bmp", "image/bmp", 413, TOO_MANY_PIXELS),
        Sample("TIFF bomb, 100000×100000", tiff_bomb(), "x.tif", "image/tiff", 413, TOO_MANY_PIXELS),
    ]
    analysed = [
        # Noise in the entropy-coded data decodes to a damaged but complete picture, as in a browser.
        Sample("JPEG with 64 bytes of noise mid-scan", corrupt(coffee, 0.5), size=(600, 400)),
        Sample("1×1 PNG", encode(np.full((1, 1, 3), 200, np.uint8), "PNG"), "x.png", "image/png", size=(1, 1)),
        Sample(
            "1×10000 PNG strip",
            encode(np.full((10_000, 1, 3), 90, np.uint8), "PNG"),
            "x.png",
            "image/png",
            size=(1, 10_000),
        ),
        Sample(
            "100000×1 PNG strip",
            encode(np.full((1, 100_000, 3), 90, np.uint8), "PNG"),
            "x.png",
            "image/png",
            size=(100_000, 1),
        ),
        Sample("16-bit grayscale PNG", sixteen_bit_gray(), "x.png", "image/png", size=(300, 200)),
        Sample("32-bit float TIFF", float_tiff(), "x.tif", "image/tiff", size=(300, 200)),
        Sample("palette PNG with transparency", palette_with_transparency(), "x.png", "image/png", size=(300, 200)),
        Sample("RGBA PNG", save(chelsea().convert("RGBA"), "PNG"), "x.png", "image/png", size=(300, 200)),
        Sample("grayscale + alpha PNG", save(chelsea().convert("LA"), "PNG"), "x.png", "image/png", size=(300, 200)),
        Sample("1-bit PNG", save(chelsea().convert("1"), "PNG"), "x.png", "image/png", size=(300, 200)),
        Sample("CMYK JPEG", save(chelsea().convert("CMYK"), "JPEG"), size=(300, 200)),
        Sample("grayscale JPEG", save(chelsea().convert("L"), "JPEG"), size=(300, 200)),
        Sample("progressive JPEG", save(chelsea(), "JPEG", progressive=True), size=(300, 200)),
        Sample("JPEG with an ICC profile", with_icc_profile(), size=(300, 200)),
        # Stored 300×200 with "rotate 90°": displayed, and so reported, as 200×300.
        Sample("EXIF-rotated JPEG (orientation 6)", exif_rotated(), size=(200, 300)),
        Sample("animated GIF", animated("GIF"), "x.gif", "image/gif", size=(300, 200)),
        Sample("animated WebP", animated("WEBP"), "x.webp", "image/webp", size=(300, 200)),
        Sample("animated PNG", animated("PNG"), "x.png", "image/png", size=(300, 200)),
        Sample("BMP", save(chelsea(), "BMP"), "x.bmp", "image/bmp", size=(300, 200)),
        Sample("LZW TIFF", save(chelsea(), "TIFF", compression="tiff_lzw"), "x.tif", "image/tiff", size=(300, 200)),
        Sample("lossless WebP", save(chelsea(), "WEBP", lossless=True), "x.webp", "image/webp", size=(300, 200)),
        Sample(
            "JPEG sent as application/octet-stream named 'upload'",
            save(chelsea(), "JPEG"),
            "upload",
            "application/octet-stream",
            size=(300, 200),
        ),
    ]
    return (*refused, *analysed)
