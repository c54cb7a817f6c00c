"""A real cortexlens server in a child process on a free loopback port, for the tests and the benchmarks.

One way to start it (``uvicorn app.main:app`` or ``cortexlens serve``), wait for it, report why it did not come
up (with its log), and stop it; the robustness tests, the browser tests, the worker test and ``bench`` share it.
Also a script in a fresh interpreter, for what depends on a process's state from its start (malloc's arenas).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@dataclass(frozen=True)
class LiveServer:
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_after_s: float

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        return rss_mb(self.process)


def in_a_fresh_process(script: str, mode: str) -> dict:
    """The JSON that ``script`` prints last, run as ``python -c script mode``: malloc's state starts clean."""
    done = subprocess.run(
        [sys.executable, "-c", script, mode],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def rss_mb(process: subprocess.Popen[bytes]) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def server_env(settings: Mapping[str, object], *, keep_outer_settings: bool = False) -> dict[str, str]:
    """This process's environment plus ``CORTEXLENS_<NAME>`` for each setting (``cache_mb=512`` →
    ``CORTEXLENS_CACHE_MB=512``); without ``keep_outer_settings``, the ``CORTEXLENS_*`` variables already set
    here are dropped first, so that only ``settings`` configure the server."""
    env = {key: value for key, value in os.environ.items() if keep_outer_settings or not key.startswith("CORTEXLENS_")}
    env.update({f"CORTEXLENS_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@contextlib.contextmanager
def live_server(
    env: Mapping[str, str],
    *,
    workers: int = 1,
    cli: bool = False,
    log_path: Path | None = None,
    ready_path: str = "/readyz",
    timeout_s: float = 180.0,
    poll_s: float = 0.2,
    stop_timeout_s: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[LiveServer]:
    """Start ``uvicorn app.main:app`` (or, with ``cli``, ``cortexlens serve``) with exactly ``env`` as its
    environment, yield once ``ready_path`` answers 200, and stop it on exit (terminate, then kill).

    The server's output goes to ``log_path`` (a temporary file, removed afterwards, when omitted). If the server
    exits before it is ready this raises :class:`RuntimeError`, and if it is not ready within ``timeout_s``
    :class:`TimeoutError`, both with the log."""
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cortexlens-live-"))) / "server.log"
        port = free_port()
        entry = ["app.cli", "serve"] if cli else ["uvicorn", "app.main:app"]
        command = [sys.executable, "-m", *entry, "--host", HOST, "--port", str(port)]
        if workers != 1:
            command += ["--workers", str(workers)]
        started = time.perf_counter()
        with log_path.open("wb") as output:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments, no user input
                [*command, *extra_args], cwd=PROJECT_ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT
            )
        url = f"http://{HOST}:{port}"
        try:
            _wait_ready(url + ready_path, process, log_path, timeout_s, poll_s)
            yield LiveServer(url, HOST, port, process, log_path, time.perf_counter() - started)
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered 200:\n{log}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        time.sleep(poll_s)
    raise TimeoutError(f"{url} not 200 after {timeout_s:g} s:\n{log_path.read_text(errors='replace')}")
