"""Against a real uvicorn process on 127.0.0.1: oversize bodies cut off while streaming, a full queue answered 503
with Retry-After, a time limit that gives 503 without losing the work, and a server that is healthy afterwards."""

from __future__ import annotations

import concurrent.futures
import json
import select
import socket
import time

import httpx
import pytest

from app.runtime import Runtime
from tests.conftest import jpeg, make_settings
from tests.robustness.photos import distinct_jpegs
from tests.robustness.server import SECRET, Server, serve

LIMIT = 2_000_000
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One inference worker, one queue slot, a 2 MB upload limit."""
    folder = tmp_path_factory.mktemp("real-server")
    with serve(folder, inference_workers=1, max_queued_analyses=1, max_upload_bytes=LIMIT) as running:
        yield running


def send_until_answered(server: Server, head: bytes, body_chunks, total: int) -> tuple[bytes, int]:
    """Send ``head`` then chunks, watching for an answer after each; returns (what came back, body bytes sent)."""
    sent = 0
    answer = b""
    with socket.create_connection((server.host, server.port), timeout=10) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # little slack in kernel buffers
        connection.sendall(head)
        deadline = time.monotonic() + 30
        for chunk in body_chunks:
            if time.monotonic() > deadline or select.select([connection], [], [], 0)[0]:
                break
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        while time.monotonic() < deadline:
            try:
                data = connection.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                break
    assert sent < total
    return answer, sent


def multipart_head(boundary: str, path: str = "/api/v1/analyses", length: int | None = None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    ).encode()


def test_an_oversize_chunked_upload_is_refused_before_it_is_all_sent(server):
    total = 40 * LIMIT
    preamble = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n\xff\xd8'

    def chunks():
        yield f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n"
        for _ in range(total // CHUNK):
            yield f"{CHUNK:x}\r\n".encode() + b"\0" * CHUNK + b"\r\n"

    answer, sent = send_until_answered(server, multipart_head("bnd"), chunks(), total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "detail": "the upload is larger than the limit of 2,000,000 bytes"
    }
    assert b"x-content-type-options: nosniff" in answer.lower()
    # The server stopped reading a little past the limit; the client never got to send the other 38 MB.
    assert sent < 4 * LIMIT


def test_a_declared_oversize_length_is_refused_before_any_body(server):
    total = 40 * LIMIT
    chunks = (b"\0" * CHUNK for _ in range(total // CHUNK))
    answer, sent = send_until_answered(server, multipart_head("bnd", length=total), chunks, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 4 * LIMIT


def test_a_full_queue_answers_503_with_retry_after(server):
    images = distinct_jpegs(12, seed=1)

    def upload(data: bytes) -> httpx.Response:
        files = {"file": ("photo.jpg", data, "image/jpeg")}
        return httpx.post(f"{server.url}/api/v1/analyses", files=files, timeout=120, trust_env=False)

    with concurrent.futures.ThreadPoolExecutor(len(images)) as pool:
        responses = list(pool.map(upload, images))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) == {201, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "5"
            assert response.json()["detail"].endswith("analyses are already running or queued; retry in a few seconds")
    assert healthy(server)
    assert httpx.get(f"{server.url}/api/v1/server", trust_env=False).json()["queue"]["admitted"] == 0


def healthy(server: Server) -> bool:
    status = httpx.get(f"{server.url}/healthz", trust_env=False).status_code
    upload = httpx.post(
        f"{server.url}/api/v1/analyses",
        files={"file": ("photo.jpg", distinct_jpegs(1, seed=99)[0], "image/jpeg")},
        timeout=60,
        trust_env=False,
    )
    return status == 200 and upload.status_code in (200, 201)


def test_a_tiny_time_limit_gives_503_and_loses_nothing(tmp_path):
    data = jpeg("astronaut")
    probe = Runtime(make_settings(tmp_path, id_secret=SECRET, preload=False))
    analysis_id = probe.analyser.analysis_id(data, probe.registry.default_id)
    probe.shutdown()
    with serve(tmp_path / "timeout", analysis_timeout_s=0.001) as slow:
        url = f"{slow.url}/api/v1/analyses"
        response = httpx.post(url, files={"file": ("a.jpg", data, "image/jpeg")}, timeout=60, trust_env=False)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json() == {
            "detail": "the analysis took longer than 0.001 s; retry when the server is less busy"
        }
        # The forward pass ran on to its end: the analysis is kept, and its place in the queue given back.
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/{analysis_id}", trust_env=False).status_code != 200:
            assert time.monotonic() < deadline, "the timed-out analysis never arrived"
            time.sleep(0.2)
        assert httpx.get(f"{slow.url}/api/v1/server", trust_env=False).json()["queue"]["admitted"] == 0
        assert httpx.get(f"{slow.url}/healthz", trust_env=False).status_code == 200
        atlas = httpx.get(f"{url}/{analysis_id}/layers/blocks.2/atlas.png", trust_env=False)
        assert atlas.status_code == 200 and atlas.headers["content-type"] == "image/png"
