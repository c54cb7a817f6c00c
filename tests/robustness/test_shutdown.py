"""Graceful shutdown: on SIGTERM the analysis in flight finishes and is answered; nothing new is taken on."""

import signal
import threading
import time

import httpx

from tests.conftest import jpeg
from tests.robustness.server import serve


def test_sigterm_lets_the_analysis_in_flight_finish(tmp_path):
    # An untrained VGG16 on two cores takes about a second: long enough to be caught in flight.
    with serve(tmp_path, allow_untrained=True) as server:
        url = f"{server.url}/api/v1/analyses"
        answer: dict[str, httpx.Response] = {}

        def analyse() -> None:
            files = {"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")}
            answer["response"] = httpx.post(url, files=files, data={"model": "vgg16"}, timeout=120, trust_env=False)

        worker = threading.Thread(target=analyse)
        worker.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/api/v1/server", trust_env=False).json()["queue"]["admitted"] == 0:
            assert time.monotonic() < deadline, "the analysis never started"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        worker.join(timeout=120)

        assert answer["response"].status_code == 201
        assert answer["response"].json()["model"] == "vgg16"
        # uvicorn finishes its shutdown, then re-raises the signal it caught, so the exit status names SIGTERM.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        log = server.log_text()
        assert "Waiting for application shutdown." in log and "Application shutdown complete." in log
        # Nothing new is taken on once the server has stopped listening.
        try:
            late = httpx.post(url, files={"file": ("c.jpg", jpeg("chelsea"), "image/jpeg")}, timeout=5, trust_env=False)
        except httpx.TransportError:
            pass
        else:
            assert late.status_code == 503
