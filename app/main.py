"""The ASGI application: ``create_app(settings)`` builds it; ``app`` is the instance uvicorn serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from app import api, web
from app.config import Settings, get_settings
from app.engine import errors
from app.middleware import AccessLog, UploadLimit
from app.openapi import document_errors_as_sent, method_not_allowed
from app.runtime import Runtime
from app.schemas import HealthPublic, ReadyPublic
from app.security import SecurityHeaders

logger = logging.getLogger(__name__)

STATUS_OF_ERROR: dict[type[errors.EngineError], int] = {
    errors.UnknownModel: 404,
    errors.UnknownLayer: 404,
    errors.UnknownChannel: 404,
    errors.UnknownAnalysis: 404,
    errors.WeightsMissing: 409,
    errors.ModelUnavailable: 409,
    errors.NotAnImage: 415,
    errors.UndecodableImage: 422,
    errors.ImageTooLarge: 413,
    errors.Overloaded: 503,
    errors.UnknownExperiment: 404,
    errors.ExperimentNotReady: 409,
    errors.InvalidParameter: 422,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (the environment's when omitted)."""
    settings = settings or get_settings()
    # Uploads stay in memory up to the limit instead of spilling to temporary files on disk.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime: Runtime = app.state.runtime
        runtime.start()
        preload = None
        if settings.preload:
            # Off the event loop, so /healthz answers while the default model loads and /readyz tells when it is done.
            preload = asyncio.wrap_future(runtime.preload_default(web.prepare_first_page))
        # The first request served on a worker thread would otherwise import anyio's thread backend (about 50 ms).
        await run_in_threadpool(lambda: None)
        yield
        runtime.draining = True
        if preload is not None:
            await preload
        await asyncio.get_running_loop().run_in_executor(None, runtime.shutdown)

    app = FastAPI(
        title="cortexlens",
        version="1.0",
        summary="What a convolutional network sees, layer by layer, beside the primate ventral stream.",
        lifespan=lifespan,
    )
    app.state.runtime = Runtime(settings)
    app.include_router(api.router)
    app.include_router(web.router)
    app.mount("/static", web.static_files(), name="static")
    _install_error_handlers(app)
    _install_health(app)
    app.add_middleware(UploadLimit, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(AccessLog)
    # Outermost, so that every response gets the headers, the upload limit's early 413 included.
    app.add_middleware(SecurityHeaders, docs_paths=(app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url))
    document_errors_as_sent(app)
    app.add_exception_handler(405, method_not_allowed)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def engine_error(_request: Request, error: Exception) -> JSONResponse:
        status = next(code for kind, code in STATUS_OF_ERROR.items() if isinstance(error, kind))
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return JSONResponse({"detail": describe_validation_errors(error)}, status_code=422)

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        detail = error.detail if error.status_code != 404 or error.detail != "Not Found" else "no such URL; see /docs"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)

    app.add_exception_handler(errors.EngineError, engine_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def describe_validation_errors(error: RequestValidationError) -> str:
    """FastAPI's validation errors as one readable sentence: ``field 'file' is required``."""
    sentences = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
        if problem.get("type") == "missing":
            sentences.append(f"field '{where}' is required")
        else:
            sentences.append(f"'{where}': {problem.get('msg', 'invalid value')}")
    return "; ".join(sentences) or "the request is invalid"


def _install_health(app: FastAPI) -> None:
    @app.get("/healthz", response_model=HealthPublic, tags=["health"], summary="The process is alive")
    async def healthz() -> HealthPublic:
        return HealthPublic(status="ok")

    @app.get(
        "/readyz",
        response_model=ReadyPublic,
        responses={503: {"model": ReadyPublic}},
        tags=["health"],
        summary="The default model is loaded",
    )
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        model_id = runtime.registry.default_id
        if runtime.registry.is_loaded(model_id):
            return JSONResponse(ReadyPublic(status="ready", default_model=model_id).model_dump())
        error = runtime.registry.load_error(model_id) or runtime.preload_error
        body = ReadyPublic(status="failed" if error else "loading", default_model=model_id, detail=error)
        return JSONResponse(body.model_dump(), status_code=503)


app = create_app()
