"""Responses for bodies that never change at their URL: cached for good, and revalidated by their bytes."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response

# Maps, arrays and charts live at URLs keyed by the analysis id (an HMAC of image and model) or the model, so a
# browser may keep them; ``private``: they belong to whoever uploaded the image, not to shared caches.
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
# For the OpenAPI document of every route that answers through ``immutable_response``.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: `If-None-Match` names this body's `ETag`; no body is sent."}
}


def immutable_response(request: Request, body: bytes, media_type: str, *, filename: str | None = None) -> Response:
    """``body`` with ``Cache-Control: immutable`` and a strong ``ETag`` of its bytes (a download when ``filename``).

    A request whose ``If-None-Match`` names that ETag gets 304 and no body: a client that revalidates (a reload
    with the cache bypassed, a client without a cache of its own) does not fetch the same bytes again.
    """
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    headers = {**IMMUTABLE, "ETag": etag}
    if filename is not None:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    # If-None-Match compares weakly (RFC 9110, 13.1.2): a W/ prefix does not matter, and * matches any body.
    if not if_none_match:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return etag in candidates or "*" in candidates
