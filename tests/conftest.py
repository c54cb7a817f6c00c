"""Shared fixtures: real photos from scikit-image, and apps built on the real default model."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")


def photo(name: str) -> np.ndarray:
    """A real photo shipped with scikit-image, as an RGB uint8 array."""
    return getattr(skimage.data, name)()


def encode(array: np.ndarray, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(name: str) -> bytes:
    return encode(photo(name), "JPEG", quality=92)


def make_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"weights_dir": tmp / "weights", "id_secret": "test-secret", "cache_mb": 256}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"not ready: {client.get('/readyz').json()}")


@pytest.fixture(scope="session")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app on its real default model, with no torchvision weights installed."""
    app = create_app(make_settings(tmp_path_factory.mktemp("app")))
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="session")
def untrained_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app that serves models without weights untrained (random weights), for the torchvision cards."""
    app = create_app(make_settings(tmp_path_factory.mktemp("untrained"), allow_untrained=True, preload=False))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def coffee_analysis(client: TestClient) -> dict:
    response = client.post("/api/v1/analyses", files={"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")})
    assert response.status_code in (200, 201), response.text
    return response.json()
