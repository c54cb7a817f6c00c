"""A real uvicorn server in a child process on 127.0.0.1, configured through ``CORTEXLENS_*`` variables."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.live import LiveServer, free_port, live_server, server_env

SECRET = "robustness-secret"
Server = LiveServer

__all__ = ["SECRET", "Server", "free_port", "serve"]


@contextlib.contextmanager
def serve(folder: Path, *, ready: bool = True, timeout: float = 180.0, **settings: object) -> Iterator[Server]:
    """Start ``app.main:app`` with ``settings`` (``inference_workers=1`` → ``CORTEXLENS_INFERENCE_WORKERS=1``),
    wait until /readyz (or, with ``ready=False``, /healthz) answers 200, and stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    # A file of its own, so that servers started one after another in one folder keep their logs apart.
    handle, log = tempfile.mkstemp(prefix="server-", suffix=".log", dir=folder)
    os.close(handle)
    env = server_env({"weights_dir": folder / "weights", "id_secret": SECRET, **settings})
    with live_server(
        env, log_path=Path(log), ready_path="/readyz" if ready else "/healthz", timeout_s=timeout
    ) as server:
        yield server
