"""A model whose weights fail to load leaves the rest of the app serving, and says why on /readyz and in the list."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import jpeg, make_settings

WEIGHTS_FILE = "resnet18-f37072fd.pth"  # models/resnet18.toml


class RunsCode:
    """Unpickling this would create a file: what a booby-trapped weights file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def truncated_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(1000)}, buffer)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def wrong_tensors() -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(3)}, buffer)
    return buffer.getvalue()


def code_in_pickle(marker: Path) -> bytes:
    return pickle.dumps({"conv1.weight": RunsCode(marker)}, protocol=2)


def test_the_booby_trap_works(tmp_path):
    pickle.loads(code_in_pickle(tmp_path / "ran"))  # noqa: S301 - the control: plain pickle does run it
    assert (tmp_path / "ran").exists()


def place_weights(folder: Path, data: bytes) -> Path:
    weights = folder / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    path = weights / WEIGHTS_FILE
    path.write_bytes(data)
    return path


def post(client: TestClient, model: str | None = None):
    form = {"model": model} if model else {}
    return client.post("/api/v1/analyses", files={"file": ("c.jpg", jpeg("coffee"), "image/jpeg")}, data=form)


def resnet18_entry(client: TestClient) -> dict:
    return next(model for model in client.get("/api/v1/models").json()["data"] if model["id"] == "resnet18")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "wrong tensors", "code in the pickle"])
def test_a_broken_model_is_refused_and_listed_with_its_error(tmp_path, kind):
    marker = tmp_path / "code-ran"
    data = {
        "garbage": b"PK\x03\x04 this is not a checkpoint" * 100,
        "truncated": truncated_checkpoint(),
        "wrong tensors": wrong_tensors(),
        "code in the pickle": code_in_pickle(marker),
    }[kind]
    path = place_weights(tmp_path, data)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert resnet18_entry(client)["weights_available"] is True
        refused = post(client, "resnet18")
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert detail.startswith(f"the weights of ResNet-18 at {path} could not be loaded: ")
        entry = resnet18_entry(client)
        assert entry["load_error"] == detail and entry["analysable"] is False and entry["loaded"] is False
        # Asked again, the model answers the same without retrying the load; the others serve on.
        assert post(client, "resnet18").json() == {"detail": detail}
        assert post(client).status_code in (200, 201)
        assert client.get("/readyz").status_code == 200
    # torch.load(weights_only=True) never runs what a pickle asks for.
    assert not marker.exists()


def test_a_broken_default_model_is_reported_on_readyz(tmp_path):
    path = place_weights(tmp_path, b"\0" * 4096)
    with TestClient(create_app(make_settings(tmp_path, default_model="resnet18"))) as client:
        deadline = time.monotonic() + 60
        while (ready := client.get("/readyz")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "failed" and body["default_model"] == "resnet18"
        assert body["detail"].startswith(f"the weights of ResNet-18 at {path} could not be loaded: ")
        assert resnet18_entry(client)["load_error"] == body["detail"]
        assert client.get("/healthz").status_code == 200
        assert post(client).status_code == 409  # the default, broken
        assert post(client, "efficientnet_lite0").status_code in (200, 201)
