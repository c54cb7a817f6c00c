"""ASGI middleware: refuse oversize bodies while they stream in, and log each request as one structured line."""

from __future__ import annotations

import html
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("cortexlens.access")

# Room for the multipart envelope and small form fields around the file itself.
ENVELOPE_BYTES = 64 * 1024


class UploadLimit:
    """Answer 413 as soon as a request body passes the limit, without reading (or storing) the rest."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_body = max_upload_bytes + ENVELOPE_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._refuse(scope, send)
            return

        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refused = True
                    await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise  # the app failed on its own; only errors from the cut-off body are ours to swallow

    async def _refuse(self, scope: Scope, send: Send) -> None:
        sentence = f"the upload is larger than the limit of {self.max_upload_bytes:,} bytes"
        if _wants_page(scope):
            # A form posted without JavaScript: a page a person can read and leave, not JSON.
            body = (
                '<!doctype html><html lang="en"><meta charset="utf-8"><title>Upload too large · cortexlens</title>'
                f"<h1>Upload too large</h1><p>{html.escape(sentence.capitalize())}.</p>"
                '<p><a href="/">Back to cortexlens</a></p></html>'
            ).encode()
            content_type = b"text/html; charset=utf-8"
        else:
            body = json.dumps({"detail": sentence}).encode()
            content_type = b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _wants_page(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return not scope["path"].startswith("/api/") and b"text/html" in headers.get(b"accept", b"")


class AccessLog:
    """One JSON line per request: method, path, status, duration and the analysis id. Never any body bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            state = scope.get("state") or {}
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "analysis_id": state.get("analysis_id"),
                    }
                )
            )
