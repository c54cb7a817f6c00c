"""The app and its OpenAPI document agree; schemathesis (tests/robustness/test_openapi_contract.py) checks it.

FastAPI documents 422 with its own body (a list of problems), while our handler in ``app.main`` sends one
sentence, ``{"detail": str}``, like every other error; and two errors come from outside the routes, so FastAPI
cannot see them: a body that cannot be parsed (a malformed form, broken JSON) is answered 400 before any route
runs, and one over the limit 413 by ``UploadLimit``. The other way round, a 405's ``Allow`` header must name
every method the document gives the path.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorPublic

ERROR_REF = "#/components/schemas/ErrorPublic"
FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


def document_errors_as_sent(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the error responses the app really sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _describe_errors(generate())  # FastAPI keeps the document it generated in ``app.openapi_schema``
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def _describe_errors(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            invalid = responses.get("422", {})
            if any(
                media.get("schema", {}).get("$ref") == FASTAPI_VALIDATION_REF
                for media in invalid.get("content", {}).values()
            ):
                responses["422"] = _error("A parameter or form field is missing or invalid")
            if operation.get("requestBody", {}).get("content"):
                responses.setdefault("400", _error("The body cannot be parsed (malformed form data or JSON)"))
                responses.setdefault("413", _error("The body is larger than the upload limit"))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorPublic", ErrorPublic.model_json_schema())
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


async def method_not_allowed(request: Request, error: Exception) -> JSONResponse:
    """405 naming every method the document gives the path. Starlette's own ``Allow`` names only the methods of
    the first route that matched, which is wrong when one path has separate routes (GET and DELETE)."""
    allowed = _documented_methods(request.app, request.url.path)
    if not allowed and isinstance(error, StarletteHTTPException) and error.headers:
        allowed = sorted(method.strip() for method in error.headers.get("Allow", "").split(",") if method.strip())
    return JSONResponse(
        {"detail": f"{request.method} is not allowed here; use {' or '.join(allowed)}"},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )


def _documented_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of the document's path templates that match ``path``; where several do, the most literal
    (``/experiments/orientation-tuning`` over ``/experiments/{experiment_id}``)."""
    matches: dict[int, set[str]] = {}
    for template, operations in app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        if re.fullmatch(pattern, path):
            parameters = sum(part.startswith("{") for part in parts)
            methods = {method.upper() for method in operations if method.upper() in HTTP_METHODS}
            matches.setdefault(parameters, set()).update(methods)
    return sorted(matches[min(matches)]) if matches else []
