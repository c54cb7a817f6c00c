"""Several worker processes answer for one another: one id secret and one folder of finished analyses.

First two apps in this process standing in for two workers, then two real uvicorn worker processes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import jpeg, make_settings, wait_ready
from tests.live import live_server, server_env


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient, Path]]:
    """Two apps on one shared folder and one secret (make_settings' test secret); only the first loads a model."""
    shared = tmp_path_factory.mktemp("shared")
    first = create_app(make_settings(tmp_path_factory.mktemp("first"), shared_dir=shared))
    second = create_app(make_settings(tmp_path_factory.mktemp("second"), shared_dir=shared, preload=False))
    with TestClient(first) as one, TestClient(second) as other:
        wait_ready(one)
        yield one, other, shared


def test_what_one_worker_analysed_another_serves(workers: tuple[TestClient, TestClient, Path]) -> None:
    one, other, shared = workers
    posted = one.post("/api/v1/analyses", files={"file": ("chelsea.jpg", jpeg("chelsea"), "image/jpeg")})
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert (shared / f"{body['id']}.npz").is_file()

    got = other.get(f"/api/v1/analyses/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    assert other.get(body["input_url"]).status_code == 200
    for layer in body["layers"]:
        atlas = other.get(layer["atlas_url"])
        assert atlas.status_code == 200 and atlas.content.startswith(b"\x89PNG")
    npy = other.get(body["layers"][-1]["activations_url"])
    assert npy.status_code == 200 and npy.content == one.get(body["layers"][-1]["activations_url"]).content
    assert other.get(body["layers"][0]["channels_url"]).status_code == 200


def test_the_same_upload_on_another_worker_is_found_not_computed(workers: tuple[TestClient, TestClient, Path]) -> None:
    one, other, _ = workers
    first = one.post("/api/v1/analyses", files={"file": ("astronaut.jpg", jpeg("astronaut"), "image/jpeg")})
    again = other.post("/api/v1/analyses", files={"file": ("copy.jpg", jpeg("astronaut"), "image/jpeg")})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert "forward" not in again.headers["server-timing"]


@pytest.mark.parametrize("analysis_id", ["0" * 32, "..%2F..%2Fetc%2Fpasswd", "A" * 32])
def test_unknown_ids_are_still_404(workers: tuple[TestClient, TestClient, Path], analysis_id: str) -> None:
    _, other, _ = workers
    assert other.get(f"/api/v1/analyses/{analysis_id}").status_code == 404


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_real_worker_processes_answer_for_each_other(tmp_path: Path) -> None:
    """``cortexlens serve --workers 2`` with nothing configured: the cli makes the secret and the folder."""
    env = server_env({"weights_dir": tmp_path / "weights"})
    log = tmp_path / "server.log"
    with live_server(env, workers=2, cli=True, log_path=log, stop_timeout_s=60) as server:
        posted = httpx.post(
            f"{server.url}/api/v1/analyses",
            files={"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")},
            timeout=120,
            trust_env=False,
        )
        assert posted.status_code == 201, posted.text
        atlas_url = server.url + posted.json()["layers"][3]["atlas_url"]
        # A new connection each time, so the kernel hands them to either worker.
        statuses = [httpx.get(atlas_url, timeout=30, trust_env=False).status_code for _ in range(12)]
        assert statuses == [200] * 12, f"{statuses}\n{log.read_text(errors='replace')[-3000:]}"
    text = log.read_text(errors="replace")
    folder = re.search(r"share finished analyses in (\S+)", text)
    assert folder is not None, text[-3000:]
    assert not Path(folder.group(1)).exists(), "the cli's private folder outlived the server"
    assert re.search(r"[0-9a-f]{64}", text) is None, "something like the id secret was logged"
