"""Browser pages. Each URL serves the whole page to a browser and, to htmx, only the block it swaps in.

The pages render the same objects as the JSON API (``analysis_public``, ``describe_model``, ``list_channels``)
and report the engine's errors with the same sentences, inline where the user acted.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from app.api.analyses import analysis_public, channel_url, list_channels, read_upload, server_timing
from app.api.models import describe_model
from app.brain import Citation, how_to_read, load_areas, load_citations
from app.engine.analysis import Analysis, check_channel
from app.engine.errors import EngineError, UnknownAnalysis, UnknownChannel, UnknownLayer
from app.engine.imaging import FORMATS
from app.engine.receptive_field import rf_in_degrees
from app.engine.stats import channels_by_activation
from app.runtime import Runtime, get_runtime
from app.schemas import ChannelsPublic
from app.web import samples
from app.web.hierarchy import build_hierarchy, layer_receptive_fields
from app.web.markdown import render_markdown
from app.web.templating import is_htmx, render

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 48  # channels per explorer page: divisible by 2, 3, 4, 6 and 8 columns
# What the engine decodes, as browsers name it (MIME type, file extensions) and as people do.
_FORMAT_INFO = {
    "JPEG": ("image/jpeg", "jpg jpeg jfif", "JPEG"),
    "PNG": ("image/png", "png", "PNG"),
    "GIF": ("image/gif", "gif", "GIF"),
    "WEBP": ("image/webp", "webp", "WebP"),
    "BMP": ("image/bmp", "bmp", "BMP"),
    "TIFF": ("image/tiff", "tif tiff", "TIFF"),
    "AVIF": ("image/avif", "avif", "AVIF"),
}


def accepted_formats() -> dict[str, str]:
    """MIME types, extensions and readable names of the formats the engine decodes, for the upload form."""
    known = [_FORMAT_INFO.get(name, (f"image/{name.lower()}", name.lower(), name)) for name in FORMATS]
    names = [name for _, _, name in known]
    return {
        "types": ",".join(mime for mime, _, _ in known),
        "extensions": " ".join(extensions for _, extensions, _ in known),
        "names": ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0],
    }


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


class NoImage(EngineError):
    """The form was sent with neither a file nor a sample."""

    def __init__(self) -> None:
        super().__init__("choose an image file to analyse, or pick one of the samples")


class UnknownSample(EngineError):
    def __init__(self, name: str) -> None:
        super().__init__(f"there is no sample named '{name}'; pick one from the gallery")


def error_status(error: EngineError) -> int:
    """The HTTP status the JSON API gives ``error``, so a page and the API never disagree."""
    if isinstance(error, NoImage):
        return 422
    if isinstance(error, UnknownSample):
        return 404
    # Imported here: app.main imports this package to include its router.
    from app.main import STATUS_OF_ERROR

    return next((code for kind, code in STATUS_OF_ERROR.items() if isinstance(error, kind)), 500)


# --- home ---------------------------------------------------------------------------------------------------


def home_context(runtime: Runtime, *, model: str | None = None, error: str | None = None) -> dict[str, Any]:
    models = [describe_model(runtime, model_id) for model_id in runtime.registry.cards]
    # Keep the user's choice after an error, unless that model cannot run (a disabled option is never sent).
    runnable = [item.id for item in models if item.analysable]
    selected = model if model in runnable else runtime.registry.default_id
    return {
        "models": models,
        "selected_model": selected,
        "samples": list(samples.SAMPLES.values()),
        "max_upload_bytes": runtime.settings.max_upload_bytes,
        "formats": accepted_formats(),
        "areas": load_areas(),
        "error": error,
    }


@router.get("/", response_class=HTMLResponse)
def home(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    return render(request, "pages/home.html", home_context(runtime))


@router.post("/analyses", response_class=HTMLResponse)
async def create_analysis_page(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile | None, File()] = None,
    sample: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
) -> Response:
    """The upload form's target: 303 to the analysis page, or the home page again with the error inline."""
    started = time.perf_counter()
    model_id = model or runtime.registry.default_id
    try:
        runtime.registry.card(model_id)
        if sample:
            if sample not in samples.SAMPLES:
                raise UnknownSample(sample)
            data = samples.sample_bytes(sample)
        elif file is not None and (file.filename or file.size):
            data = await read_upload(file, runtime.settings.max_upload_bytes)
        else:
            raise NoImage()
        analysis, computed = await runtime.run(runtime.analyser.analyse, data, model_id)
    except EngineError as error:
        status = error_status(error)
        context = await run_in_threadpool(home_context, runtime, model=model_id, error=str(error))
        headers = {"Retry-After": "5"} if status == 503 else None
        return render(request, "pages/home.html", context, status_code=status, headers=headers)
    request.state.analysis_id = analysis.id
    page_url = f"/analyses/{analysis.id}"
    timings = dict(analysis.timings_ms) if computed else {}
    response: Response
    if is_htmx(request):
        # The page itself, with its URL for the history: a redirect would cost the browser another round trip
        # before it could start on the page and its pictures.
        analysed = time.perf_counter()
        response = await run_in_threadpool(analysis_page_response, request, runtime, analysis)
        timings["page"] = (time.perf_counter() - analysed) * 1000
        response.headers["HX-Push-Url"] = page_url
    else:
        runtime.render_ahead(analysis)
        # Without JavaScript: post, redirect, get, so that reloading the page does not post the image again.
        response = RedirectResponse(page_url, status_code=303, headers={"Vary": "HX-Request"})
    response.headers["Server-Timing"] = server_timing(timings, (time.perf_counter() - started) * 1000)
    return response


# --- analysis -----------------------------------------------------------------------------------------------


def not_found(request: Request, message: str) -> HTMLResponse:
    return render(request, "pages/not_found.html", {"message": message}, fragment="notice", status_code=404)


def _default_explorer_layer(analysis: Analysis) -> str:
    # The deepest layer that still has a spatial map; fully connected layers only have 1×1 "maps".
    spatial = [layer.name for layer in analysis.layers.values() if layer.shape[1] * layer.shape[2] > 1]
    return (spatial or list(analysis.layers))[-1]


def explorer_context(
    runtime: Runtime, analysis: Analysis, layer_name: str, offset: int, *, when_seen: bool = False
) -> dict[str, Any]:
    """One page of a layer's channels, most active first, from the same call the JSON API answers.

    ``when_seen``: no channels yet, only the list's last item, which loads the first page when it scrolls into view
    (as it loads every next page): the analysis page shows the explorer last, and its tiles made up a quarter of
    the page the browser had to lay out before showing anything.
    """
    layer = analysis.layer(layer_name)
    if when_seen:
        page = ChannelsPublic(data=[], count=0, total=layer.shape[0], offset=0)
    else:
        page = list_channels(analysis.id, layer_name, runtime, offset=offset, limit=PAGE_SIZE)
    next_offset = offset + page.count if offset + page.count < page.total else None
    return {
        "explorer_layer": layer,
        "channels": page,
        "next_offset": next_offset,
        "prev_offset": max(offset - PAGE_SIZE, 0) if offset > 0 else None,
        "page_size": PAGE_SIZE,
    }


def analysis_context(runtime: Runtime, analysis: Analysis) -> dict[str, Any]:
    public = analysis_public(analysis)
    return {
        "analysis": public,
        "model": describe_model(runtime, analysis.model_id),
        "hierarchy": build_hierarchy(runtime, analysis, public),
    }


@router.get("/analyses/{analysis_id}", response_class=HTMLResponse)
def analysis_page(analysis_id: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    try:
        analysis = runtime.analyser.get(analysis_id)
    except UnknownAnalysis as error:
        return not_found(request, str(error))
    return analysis_page_response(request, runtime, analysis)


def analysis_page_response(request: Request, runtime: Runtime, analysis: Analysis) -> HTMLResponse:
    context = analysis_context(runtime, analysis)
    context.update(explorer_context(runtime, analysis, _default_explorer_layer(analysis), 0, when_seen=True))
    # Imported here: app.web.lab builds on this module's helpers.
    from app.web.lab import analysis_lab_context

    context.update(analysis_lab_context(request, runtime, analysis))
    response = render(request, "pages/analysis.html", context)
    # Its pictures are made while the page is on its way. Started only now: Python threads take turns, and the
    # page would otherwise wait for the pictures it is about to ask for.
    runtime.render_ahead(analysis)
    return response


@router.get("/analyses/{analysis_id}/layers/{layer}", response_class=HTMLResponse)
def layer_page(
    analysis_id: str,
    layer: str,
    request: Request,
    runtime: RuntimeDep,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Every channel of a layer, a page at a time. htmx gets only the next page of tiles (infinite scroll)."""
    try:
        analysis = runtime.analyser.get(analysis_id)
        context = {"analysis": analysis_public(analysis), "model": describe_model(runtime, analysis.model_id)}
        context.update(explorer_context(runtime, analysis, layer, offset))
    except (UnknownAnalysis, UnknownLayer) as error:
        return not_found(request, str(error))
    return render(request, "pages/layer.html", context, fragment="channel_page")


@router.get("/analyses/{analysis_id}/layers/{layer}/channels/{channel}", response_class=HTMLResponse)
def channel_page(analysis_id: str, layer: str, channel: int, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """One channel: its map enlarged, over the input, and its statistics. htmx gets the detail panel only."""
    try:
        analysis = runtime.analyser.get(analysis_id)
        result = analysis.layer(layer)
        check_channel(result, channel)
    except (UnknownAnalysis, UnknownLayer, UnknownChannel) as error:
        return not_found(request, str(error))
    order = channels_by_activation(result.stats.channel_means)
    rank = order.index(channel) + 1
    detail = list_channels(analysis.id, layer, runtime, offset=rank - 1, limit=1).data[0]
    public = analysis_public(analysis)
    card = runtime.registry.card(analysis.model_id)
    try:
        field = layer_receptive_fields(runtime, analysis.model_id).get(layer)
    except Exception:  # the panel does without the receptive field; the reason goes to the log
        logger.exception("receptive fields of %s could not be computed", analysis.model_id)
        field = None
    context = {
        "analysis": public,
        "field": field,
        "field_deg": rf_in_degrees(field.rf_px, card.preprocess.crop, runtime.settings.fov_deg) if field else None,
        "input_px": card.preprocess.crop,
        "layer": next(item for item in public.layers if item.name == layer),
        "channel": detail,
        "total": len(order),
        "previous": order[rank - 2] if rank > 1 else None,
        "next": order[rank] if rank < len(order) else None,
        "model": describe_model(runtime, analysis.model_id),
        "channel_png": channel_url(analysis.id, layer, channel),
    }
    return render(request, "pages/channel.html", context, fragment="channel_detail")


# --- about and samples --------------------------------------------------------------------------------------


@router.get("/about", response_class=HTMLResponse)
def about_page(request: Request) -> HTMLResponse:
    try:
        text = how_to_read()
    except OSError:
        text = None
    citations: dict[str, Citation] = load_citations()
    context = {
        "how_to_read": render_markdown(text, shift_headings=0) if text else None,
        "citations": list(citations.values()),
    }
    return render(request, "pages/about.html", context)


SAMPLE_CACHE = {"Cache-Control": "public, max-age=86400"}


@router.get("/samples/{filename}")
def sample_image(filename: str) -> Response:
    sample = samples.sample_by_file(filename)
    if sample is None:
        raise HTTPException(404, f"there is no sample '{filename}'; the gallery on / lists them")
    return Response(samples.sample_bytes(sample.name), media_type=sample.media_type, headers=SAMPLE_CACHE)


@router.get("/samples/thumbs/{filename}")
def sample_thumbnail(filename: str) -> Response:
    sample = samples.sample_by_file(filename)
    if sample is None:
        raise HTTPException(404, f"there is no sample '{filename}'; the gallery on / lists them")
    return Response(samples.thumbnail_bytes(sample.name), media_type=sample.media_type, headers=SAMPLE_CACHE)
