"""A real uvicorn server in a child process on 127.0.0.1, configured through ``CORTEXLENS_*`` variables."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import PROJECT_ROOT

SECRET = "robustness-secret"


@dataclass
class Server:
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def rss_mb(self) -> float:
        """Resident memory of the server process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(folder: Path, *, ready: bool = True, timeout: float = 180.0, **settings: object) -> Iterator[Server]:
    """Start ``app.main:app`` with ``settings`` (``inference_workers=1`` → ``CORTEXLENS_INFERENCE_WORKERS=1``),
    wait until /readyz (or, with ``ready=False``, /healthz) answers 200, and stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CORTEXLENS_")}
    env.update({"CORTEXLENS_WEIGHTS_DIR": str(folder / "weights"), "CORTEXLENS_ID_SECRET": SECRET})
    env.update({f"CORTEXLENS_{name.upper()}": str(value) for name, value in settings.items()})
    port = free_port()
    log = folder / f"server-{port}.log"
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log)
    try:
        _wait(server, "/readyz" if ready else "/healthz", timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + path, timeout=5, trust_env=False).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{server.url}{path} not 200 after {timeout:g} s:\n{server.log_text()[-3000:]}")
