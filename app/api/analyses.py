"""POST/GET /api/v1/analyses: an image through a model, and the pictures and arrays that come out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.caching import NOT_MODIFIED, immutable_response
from app.engine import render
from app.engine.analysis import Analysis, LayerResult, atlas_key, channel_key, input_key
from app.engine.errors import ImageTooLarge
from app.engine.stats import channels_by_activation
from app.runtime import Runtime, get_runtime
from app.schemas import (
    AnalysisPublic,
    AtlasGridPublic,
    ChannelDetailPublic,
    ChannelPublic,
    ChannelsPublic,
    ErrorPublic,
    ImagePublic,
    LayerAnalysisPublic,
    PredictionPublic,
    StatsPublic,
)

router = APIRouter(prefix="/analyses", tags=["analyses"])

AnalysisId = Annotated[str, Path(description="The id returned by POST /api/v1/analyses.")]
LayerName = Annotated[str, Path(description="A curated layer's dotted name, e.g. `blocks.2`.")]
Responses = dict[int | str, dict[str, Any]]
PNG_RESPONSE: Responses = {200: {"content": {"image/png": {}}, "description": "A PNG image."}, **NOT_MODIFIED}
ERRORS: Responses = {code: {"model": ErrorPublic} for code in (404, 409, 413, 415, 422, 503)}


def analysis_url(analysis_id: str) -> str:
    return f"/api/v1/analyses/{analysis_id}"


def layer_url(analysis_id: str, layer: str) -> str:
    return f"{analysis_url(analysis_id)}/layers/{layer}"


def channel_url(analysis_id: str, layer: str, channel: int) -> str:
    return f"{layer_url(analysis_id, layer)}/channels/{channel}.png"


def analysis_public(analysis: Analysis) -> AnalysisPublic:
    """The JSON body of an analysis; the web pages render the same object."""
    return AnalysisPublic(
        id=analysis.id,
        model=analysis.model_id,
        trained=analysis.trained,
        image=ImagePublic(**vars(analysis.image)),
        input_url=f"{analysis_url(analysis.id)}/input.png",
        predictions=[PredictionPublic(**vars(p)) for p in analysis.predictions],
        layers=[_layer_public(analysis.id, layer) for layer in analysis.layers.values()],
        timings_ms={name: round(ms, 2) for name, ms in analysis.timings_ms.items()},
    )


def _layer_public(analysis_id: str, layer: LayerResult) -> LayerAnalysisPublic:
    stats = layer.stats
    columns, rows = render.atlas_grid(len(stats.top_channels))
    base = layer_url(analysis_id, layer.name)
    return LayerAnalysisPublic(
        name=layer.name,
        label=layer.label,
        shape=list(layer.shape),
        stats=StatsPublic(mean=stats.mean, max=stats.max, sparsity=stats.sparsity),
        top_channels=[
            ChannelPublic(index=i, mean=mean)
            for i, mean in zip(stats.top_channels, stats.channel_means[stats.top_channels].tolist(), strict=True)
        ],
        atlas_url=f"{base}/atlas.png",
        atlas=AtlasGridPublic(columns=columns, rows=rows, channels=stats.top_channels),
        activations_url=f"{base}/activations.npy",
        channels_url=f"{base}/channels",
    )


def server_timing(timings_ms: dict[str, float], total_ms: float) -> str:
    parts = [f"{name};dur={ms:.1f}" for name, ms in timings_ms.items()]
    return ", ".join([*parts, f"total;dur={total_ms:.1f}"])


async def picture_response(request: Request, ready: bytes | None, make: Callable[[], bytes]) -> Response:
    """A PNG answered on the event loop when it is ``ready`` (rendered already, as the first view's are: see
    ``Analyser.render_first_view``); otherwise made, or waited for, on a worker thread by ``make``.

    The hop to a worker thread and back is two wake-ups, and each waits for a core while the browser that asked is
    busy on the same ones: cached pictures took 5–9 ms each to answer that way during a first view.
    """
    png = ready if ready is not None else await run_in_threadpool(make)
    return immutable_response(request, png, "image/png")


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing past ``limit`` without reading further."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"the upload is larger than the limit of {limit:,} bytes")
    return data


@router.post(
    "",
    status_code=201,
    response_model=AnalysisPublic,
    responses={200: {"model": AnalysisPublic, "description": "Analysed before: the stored analysis"}, **ERRORS},
    summary="Analyse an image",
    description="Runs the image through the model once and returns predictions and per-layer statistics. "
    "The same image and model always give the same id, and are computed once while cached. "
    "Maps and arrays are rendered on first request from the URLs in the body.",
)
async def create_analysis(
    request: Request,
    response: Response,
    file: Annotated[UploadFile, File(description="A photo (JPEG, PNG, GIF, WebP, BMP, TIFF).")],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    model: Annotated[str | None, Form(description="Model id; the server's default when omitted.")] = None,
) -> AnalysisPublic:
    started = time.perf_counter()
    model_id = model or runtime.registry.default_id
    runtime.registry.card(model_id)  # an unknown model is a 404 before any work
    data = await read_upload(file, runtime.settings.max_upload_bytes)
    analysis, computed = await runtime.run(runtime.analyser.analyse, data, model_id)
    total_ms = (time.perf_counter() - started) * 1000
    response.headers["Location"] = analysis_url(analysis.id)
    response.headers["Server-Timing"] = server_timing(analysis.timings_ms if computed else {}, total_ms)
    if not computed:
        response.status_code = 200
    request.state.analysis_id = analysis.id
    return analysis_public(analysis)


@router.get("/{analysis_id}", response_model=AnalysisPublic, responses=ERRORS, summary="An analysis")
def get_analysis(
    analysis_id: AnalysisId, response: Response, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> AnalysisPublic:
    started = time.perf_counter()
    body = analysis_public(runtime.analyser.get(analysis_id))
    response.headers["Server-Timing"] = server_timing({}, (time.perf_counter() - started) * 1000)
    return body


@router.get(
    "/{analysis_id}/input.png",
    response_class=Response,
    responses={**PNG_RESPONSE, 404: {"model": ErrorPublic}},
    summary="The image as the network saw it",
)
async def get_input(
    analysis_id: AnalysisId, request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Response:
    analyser = runtime.analyser
    ready = analyser.rendered(analysis_id, input_key())
    return await picture_response(request, ready, lambda: analyser.input_png(analyser.get(analysis_id)))


@router.get(
    "/{analysis_id}/layers/{layer}/atlas.png",
    response_class=Response,
    responses={**PNG_RESPONSE, 404: {"model": ErrorPublic}},
    summary="The layer's most active channels in one grid",
)
async def get_atlas(
    analysis_id: AnalysisId, layer: LayerName, request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Response:
    analyser = runtime.analyser
    ready = analyser.rendered(analysis_id, atlas_key(layer))
    return await picture_response(request, ready, lambda: analyser.atlas_png(analyser.get(analysis_id), layer))


@router.get(
    "/{analysis_id}/layers/{layer}/channels/{channel}.png",
    response_class=Response,
    responses={**PNG_RESPONSE, 404: {"model": ErrorPublic}},
    summary="One channel's map",
)
async def get_channel(
    analysis_id: AnalysisId,
    layer: LayerName,
    channel: Annotated[int, Path(description="Channel index, 0-based.")],
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> Response:
    analyser = runtime.analyser
    ready = analyser.rendered(analysis_id, channel_key(layer, channel))
    return await picture_response(
        request, ready, lambda: analyser.channel_png(analyser.get(analysis_id), layer, channel)
    )


@router.get(
    "/{analysis_id}/layers/{layer}/channels",
    response_model=ChannelsPublic,
    responses={404: {"model": ErrorPublic}},
    summary="Every channel of a layer, most active first, a page at a time",
)
def list_channels(
    analysis_id: AnalysisId,
    layer: LayerName,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=256)] = 64,
) -> ChannelsPublic:
    result = runtime.analyser.get(analysis_id).layer(layer)
    order = channels_by_activation(result.stats.channel_means)
    page = order[offset : offset + limit]
    return ChannelsPublic(
        data=[
            ChannelDetailPublic(
                index=index,
                mean=float(result.stats.channel_means[index]),
                max=float(result.stats.channel_maxes[index]),
                rank=offset + position + 1,
                url=channel_url(analysis_id, layer, index),
            )
            for position, index in enumerate(page)
        ],
        count=len(page),
        total=len(order),
        offset=offset,
    )


@router.get(
    "/{analysis_id}/layers/{layer}/activations.npy",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **NOT_MODIFIED, 404: {"model": ErrorPublic}},
    summary="The layer's raw activations (NumPy .npy, float32, C×H×W)",
)
def get_activations(
    analysis_id: AnalysisId, layer: LayerName, request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Response:
    analyser = runtime.analyser
    data = analyser.activations_npy(analyser.get(analysis_id), layer)
    return immutable_response(request, data, "application/octet-stream", filename=f"{analysis_id[:12]}-{layer}.npy")
