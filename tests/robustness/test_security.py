"""Security: headers on every response, input echoed only safely, unguessable ids, uploads kept off disk and out of
the logs."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile

import numpy as np
import pytest
from PIL import Image
from starlette.formparsers import MultiPartParser

from app.main import create_app
from app.security import CONTENT_SECURITY_POLICY, DOCS_CONTENT_SECURITY_POLICY
from tests.conftest import jpeg, make_settings

XSS = "<img src=x onerror=alert(1)>"
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def assert_security_headers(response, policy: str = STRICT_CSP) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == policy, response.url
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"


def test_the_policy_is_the_strict_one():
    assert CONTENT_SECURITY_POLICY == STRICT_CSP
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_every_kind_of_response_carries_the_headers(client, coffee_analysis):
    base = coffee_analysis["input_url"].removesuffix("/input.png")
    responses = {
        "health": client.get("/healthz"),
        "ready": client.get("/readyz"),
        "JSON": client.get("/api/v1/models"),
        "OpenAPI": client.get("/openapi.json"),
        "PNG": client.get(f"{base}/layers/blocks.2/atlas.png"),
        "npy": client.get(f"{base}/layers/blocks.2/activations.npy"),
        "HTML page": client.get("/"),
        "static file": client.get("/static/app.js"),
        "404 JSON": client.get(f"{base}/layers/nope/atlas.png"),
        "404 no route": client.get("/no/such/url"),
        "404 HTML": client.get("/analyses/nope"),
        "405": client.delete("/api/v1/models"),
        "422": client.get(f"{base}/layers/blocks.2/channels/x.png"),
        "415": client.post("/api/v1/analyses", files={"file": ("x.jpg", b"text", "image/jpeg")}),
        "413 while streaming": client.post("/api/v1/analyses", content=b"\0" * 21_000_000),
    }
    for name, response in responses.items():
        assert response.status_code != 500, name
        assert_security_headers(response)


def test_only_the_docs_pages_get_a_looser_policy(client):
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200
        assert_security_headers(response, DOCS_CONTENT_SECURITY_POLICY)
    assert "frame-ancestors 'none'" in DOCS_CONTENT_SECURITY_POLICY
    assert "connect-src 'self'" in DOCS_CONTENT_SECURITY_POLICY


def test_pages_need_no_inline_code(client, coffee_analysis):
    """The strict policy blocks inline scripts, styles and event handlers, so the pages must have none."""
    analysis = f"/analyses/{coffee_analysis['id']}"
    for url in ("/", "/about", analysis, f"{analysis}/layers/blocks.2", f"{analysis}/layers/blocks.2/channels/3"):
        html = client.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"<style|\sstyle\s*=", html), url
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), url


@pytest.mark.parametrize(
    "url", [f"/analyses/{XSS}", "/analyses/{id}/layers/" + XSS, "/analyses/{id}/layers/" + XSS + "/channels/1"]
)
def test_html_pages_escape_what_they_echo(client, coffee_analysis, url):
    response = client.get(url.format(id=coffee_analysis["id"]))
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert XSS not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


def test_json_errors_echo_as_json_only(client):
    response = client.get(f"/api/v1/analyses/{XSS}")
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["detail"].startswith(f"no analysis '{XSS}'")
    assert response.headers["x-content-type-options"] == "nosniff"


# --- ids -----------------------------------------------------------------------------------------------------------


def analysis_id(tmp_path, secret: str, data: bytes) -> str:
    app = create_app(make_settings(tmp_path, id_secret=secret, preload=False))
    return app.state.runtime.analyser.analysis_id(data, "efficientnet_lite0")


def test_ids_are_keyed_with_the_server_secret(tmp_path, client):
    data = jpeg("coffee")
    first, again, other = (analysis_id(tmp_path, secret, data) for secret in ("one", "one", "two"))
    assert first == again and first != other
    assert re.fullmatch(r"[0-9a-f]{32}", first)  # 128 bits
    # Not a plain hash of the upload, which anyone holding the image could compute.
    for digest in (hashlib.sha256(data), hashlib.sha256(b"efficientnet_lite0\0" + data), hashlib.md5(data)):  # noqa: S324
        assert digest.hexdigest()[:32] != first
    served = client.post("/api/v1/analyses", files={"file": ("c.jpg", data, "image/jpeg")}).json()["id"]
    assert served == analysis_id(tmp_path, "test-secret", data)  # the session app's secret (tests/conftest.py)


def test_the_default_secret_is_random_per_process(tmp_path):
    from app.config import Settings

    assert Settings(weights_dir=tmp_path).id_secret != Settings(weights_dir=tmp_path).id_secret


# --- uploads stay in memory and out of the logs ----------------------------------------------------------------------


def noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


@pytest.fixture
def temp_files(monkeypatch):
    """Every temporary file created through ``tempfile`` while the test runs (Starlette spools uploads with it;
    unnamed ``O_TMPFILE`` files never show in a directory listing, so the calls are counted instead)."""
    created: list[str] = []
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        original = getattr(tempfile, name)

        def record(*args, _original=original, _name=name, **kwargs):
            created.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(tempfile, name, record)
    return created


def test_uploads_are_not_written_to_disk(client, temp_files, monkeypatch):
    data = noise_png(5.1)
    assert len(data) > 5_000_000
    folder = tempfile.gettempdir()
    before = set(os.listdir(folder))
    response = client.post("/api/v1/analyses", files={"file": ("big.png", data, "image/png")})
    assert response.status_code in (200, 201), response.text
    assert temp_files == [] and set(os.listdir(folder)) <= before

    # The control: with Starlette's own 1 MB spool the same upload does go to a temporary file.
    monkeypatch.setattr(MultiPartParser, "spool_max_size", 1024 * 1024)
    client.post("/api/v1/analyses", files={"file": ("big.png", data, "image/png")})
    assert temp_files == ["TemporaryFile"]


def test_nothing_uploaded_reaches_the_logs(client, caplog):
    filename = "zq-private-holiday-4711.jpg"
    secret_text = b"ZQ-PRIVATE-BYTES-0815"
    picture = io.BytesIO()
    Image.open(io.BytesIO(jpeg("rocket"))).save(picture, format="JPEG", comment=secret_text)
    with caplog.at_level(logging.DEBUG):
        analysed = client.post("/api/v1/analyses", files={"file": (filename, picture.getvalue(), "image/jpeg")})
        refused = client.post("/api/v1/analyses", files={"file": (filename, secret_text * 50, "image/jpeg")})
    assert analysed.status_code in (200, 201) and refused.status_code == 415
    assert caplog.records, "nothing was logged at all: the capture is not working"
    logged = "\n".join(f"{record.getMessage()} {record.args!r}" for record in caplog.records)
    for marker in (filename, "zq-private", secret_text.decode(), "ZQ-PRIVATE"):
        assert marker not in logged


def test_the_access_log_has_no_query_or_body(client, caplog):
    with caplog.at_level(logging.INFO, logger="cortexlens.access"):
        client.get("/api/v1/models?token=zq-query-secret")
    access = [record.getMessage() for record in caplog.records if record.name == "cortexlens.access"]
    assert access and all("zq-query-secret" not in line for line in access)


def test_a_real_server_logs_nothing_uploaded(tmp_path):
    import httpx

    from tests.robustness.server import serve

    filename = "zq-private-holiday-4711.jpg"
    with serve(tmp_path, preload="false", ready=False) as server:
        for data in (jpeg("coffee"), b"ZQ-PRIVATE-BYTES-0815" * 10):
            response = httpx.post(
                f"{server.url}/api/v1/analyses",
                files={"file": (filename, data, "image/jpeg")},
                timeout=60,
                trust_env=False,
            )
            assert response.status_code in (201, 415)
        log = server.log_text()
    assert "POST /api/v1/analyses" in log  # uvicorn's access log is on
    assert "zq-private" not in log and "ZQ-PRIVATE" not in log
