"""What every figure needs: a real uvicorn server on loopback, distinct real photos, the bare forward pass."""

from __future__ import annotations

import http.client
import io
import os
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import skimage.data
import torch
from PIL import Image

from tests.live import live_server, rss_mb, server_env

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
THREADS = 2


def distinct_photos(count: int, seed: int = 0) -> Iterator[bytes]:
    """``count`` different JPEGs cut from scikit-image's real photos, so no analysis is a cache hit."""
    rng = np.random.default_rng(seed)
    sources = [getattr(skimage.data, name)() for name in PHOTOS]
    for index in range(count):
        source = sources[index % len(sources)]
        height, width = source.shape[:2]
        crop_h, crop_w = int(height * rng.uniform(0.7, 0.95)), int(width * rng.uniform(0.7, 0.95))
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        patch = source[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(patch)).save(buffer, format="JPEG", quality=int(rng.integers(80, 95)))
        yield buffer.getvalue()


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    started_s: float

    def rss_mb(self) -> float:
        return rss_mb(self.process)


@contextmanager
def server(**settings: str) -> Iterator[Server]:
    """A real uvicorn process on a free loopback port, ready (``/readyz`` 200) when yielded."""
    env = server_env({"torch_threads": THREADS, "id_secret": "bench", **settings}, keep_outer_settings=True)
    # Polled often, so that ``started_s`` measures the start-up and not the polling interval.
    with live_server(env, timeout_s=120, poll_s=0.02, extra_args=("--log-level", "warning")) as live:
        started = Server(live.url, live.process, live.ready_after_s)
        wait_until_quiet(started.process)
        yield started


def wait_until_quiet(process: subprocess.Popen[bytes], window_s: float = 0.5, limit_s: float = 30.0) -> None:
    """Wait until ``process`` uses under a tenth of a core, so that figures measure the steady state and not the
    work the server does once ready (receptive fields, templates: ``Runtime.preload_default``) on the same cores."""
    deadline = time.monotonic() + limit_s
    busy_s = cpu_seconds(process)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        previous, busy_s = busy_s, cpu_seconds(process)
        if busy_s - previous < 0.1 * window_s:
            return


def cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User plus system CPU time of ``process`` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Uploader:
    """A lean client for the timed uploads: one keep-alive connection, each multipart body built before its clock
    starts (``multipart``), the whole response read and its status checked, as a load generator such as wrk or ab
    sends requests.

    The bench's clients run on the server's two cores, so whatever a client spends on a request is taken from the
    server's figures: httpx spends 1.4–1.6 ms of CPU on each upload, this 0.35 ms (``docs/performance.md``). The
    figures that time uploads measure httpx too, in the same run, and report it beside.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, upload: tuple[bytes, dict[str, str]], status: int = 201) -> bytes:
        """POST ``upload``; ``status`` 201 when it must be analysed now, 200 when it must come from the store."""
        body, headers = upload
        self._connection.request("POST", "/api/v1/analyses", body, headers)
        response = self._connection.getresponse()
        content = response.read()
        if response.status != status:
            raise RuntimeError(f"POST /api/v1/analyses answered {response.status}: {content[:200]!r}")
        return content

    def close(self) -> None:
        self._connection.close()


def multipart(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a form upload of ``data`` as ``file``, as a browser or httpx sends it."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_analysis(client: httpx.Client, data: bytes) -> httpx.Response:
    response = client.post("/api/v1/analyses", files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=120)
    response.raise_for_status()
    return response


class BareForward:
    """The physical floor: the default model's forward pass alone, in this process, with the server's thread count
    and malloc thresholds (``app.engine.allocator``), and traced into a TorchScript graph as the server runs it
    (``app.engine.capture.TracedCapture``), so that the server's own speed-ups lower the floor too. The eager
    ``nn.Module`` pass is measured beside it, for the figures against it."""

    def __init__(self) -> None:
        from app.config import Settings
        from app.engine.allocator import keep_freed_memory
        from app.engine.capture import TracedCapture
        from app.engine.models import ModelRegistry

        torch.set_num_threads(THREADS)
        keep_freed_memory()
        self.settings = settings = Settings()
        self.registry = registry = ModelRegistry.from_folder(settings.models_dir, settings.weights_dir)
        self.eager = registry.get(registry.default_id).module
        self.batch = torch.randn(1, 3, 224, 224)
        # The server's traced pass with no layers recorded: traced, checked and warmed up as the server's is.
        self.model = TracedCapture(self.eager, [], input_size=224)
        self.once()
        self.eager_once()

    def once(self) -> float:
        return self._time(self.model)

    def eager_once(self) -> float:
        return self._time(self.eager)

    def _time(self, model: Callable[[torch.Tensor], object]) -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            model(self.batch)
            return time.perf_counter() - started

    def median(self, runs: int) -> float:
        return statistics.median(self.once() for _ in range(runs))

    def eager_median(self, runs: int) -> float:
        return statistics.median(self.eager_once() for _ in range(runs))

    def side_by_side_per_s(self, runs: int) -> float:
        """Forward passes per second with one one-thread pass per thread of ours, side by side: the most the
        server's scheduling (``app.engine.inference_pool``) could reach, reported beside the ratio for honesty."""

        def run_alone() -> None:
            torch.set_num_threads(1)
            with torch.inference_mode():
                for _ in range(runs):
                    self.model(self.batch)

        workers = [threading.Thread(target=run_alone) for _ in range(THREADS)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return THREADS * runs / (time.perf_counter() - started)


class DirectAnalysis:
    """The analysis a POST runs, called in this process, back to back with the floor: decoding, the traced pass
    recording the card's layers, statistics, the id and the store, without HTTP, an event loop or a hand-off to
    another thread. With a POST the store answers (the HTTP exchange alone), it is what no POST can go below here:
    reported beside figure 1, for honesty about how far down its target is reachable."""

    def __init__(self, forward: BareForward) -> None:
        from app.engine.analysis import Analyser, Analysis
        from app.engine.store import AnalysisStore

        settings = forward.settings
        self._model_id = forward.registry.default_id
        self._analyser = Analyser(
            forward.registry,
            AnalysisStore[Analysis](64_000_000),
            secret=uuid.uuid4().hex,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )

    def once(self, data: bytes) -> tuple[float, dict[str, float]]:
        """Seconds to analyse ``data``, new to this store, and the analysis's own timings of its steps."""
        started = time.perf_counter()
        analysis, computed = self._analyser.analyse(data, self._model_id)
        elapsed = time.perf_counter() - started
        if not computed:
            raise RuntimeError("the photo was answered from the store, unlike intended")
        return elapsed, analysis.timings_ms


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
