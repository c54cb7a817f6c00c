"""``cortexlens serve``: start the web server."""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cortexlens", description="See what a CNN sees, beside the ventral stream.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the web server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="default model id (see GET /api/v1/models)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (each holds its own models and cache)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.model:
        # Through the environment, so that every worker process reads the same setting.
        os.environ["CORTEXLENS_DEFAULT_MODEL"] = args.model
    import uvicorn

    logging.getLogger(__name__).info("cortexlens at http://%s:%d", args.host, args.port)
    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers, log_level="info")


if __name__ == "__main__":
    main()
