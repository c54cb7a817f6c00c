"""``cortexlens serve``: start the web server."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cortexlens", description="See what a CNN sees, beside the ventral stream.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the web server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="default model id (see GET /api/v1/models)")
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes (each holds its own models; analyses are shared)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.model:
        # Through the environment, so that every worker process reads the same setting.
        os.environ["CORTEXLENS_DEFAULT_MODEL"] = args.model
    private_folder = share_between_workers() if args.workers > 1 else None
    import uvicorn

    logger.info("cortexlens at http://%s:%d", args.host, args.port)
    try:
        uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers, log_level="info")
    finally:
        if private_folder is not None:
            shutil.rmtree(private_folder, ignore_errors=True)


def share_between_workers() -> Path | None:
    """Set, before uvicorn forks, what every worker process must agree on: the id secret (so one image gets one
    id everywhere) and the folder of finished analyses (so any worker answers for an id). Workers inherit the
    environment. Returns the folder when this process made it (and so removes it at exit)."""
    if not os.environ.get("CORTEXLENS_ID_SECRET"):
        os.environ["CORTEXLENS_ID_SECRET"] = secrets.token_hex(32)
        logger.info("the workers share a new id secret; set CORTEXLENS_ID_SECRET to keep ids across restarts")
    if os.environ.get("CORTEXLENS_SHARED_DIR"):
        return None
    # Memory-backed where there is one; mkdtemp makes the folder readable by this user only (0700).
    shm = Path("/dev/shm")  # noqa: S108 - only the parent of a private folder mkdtemp makes
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="cortexlens-", dir=parent))
    os.environ["CORTEXLENS_SHARED_DIR"] = str(folder)
    logger.info("the workers share finished analyses in %s", folder)
    return folder


if __name__ == "__main__":
    main()
