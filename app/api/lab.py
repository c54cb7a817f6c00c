"""The lab's JSON API: orientation-tuning experiments (jobs), early receptive fields, Grad-CAM, comparisons.

Heavy work never runs on the event loop: experiments go to the lab's own job pool, everything else that
computes goes through the runtime's bounded inference queue (``runtime.run``). Results that are costly and do
not change (first-layer fields, Grad-CAM maps) are computed once and kept by :class:`app.lab.service.Lab`.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, Path, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.analyses import analysis_url, layer_url, read_upload
from app.api.caching import NOT_MODIFIED, immutable_response
from app.engine.analysis import Analysis
from app.engine.errors import ExperimentNotReady, InvalidParameter, UnknownLayer
from app.lab import facts, similarity
from app.lab.fields import LayerFields, describe_thresholds
from app.lab.gabor import R2_GOOD
from app.lab.gradcam import SOURCE as GRADCAM_SOURCE
from app.lab.images import grid_shape
from app.lab.jobs import Job
from app.lab.service import Lab, RenderedFields, RenderedGradCam, osi_chart, tuning_chart
from app.lab.stimuli import to_cycles_per_image
from app.lab.svg import PALETTE, Series, line_plot
from app.lab.tuning import DEFINITIONS, OSI_SELECTIVE, OrientationTuning, TuningSpec
from app.runtime import Runtime, get_runtime
from app.schemas import (
    ComparedAnalysisPublic,
    ComparisonPublic,
    ErrorPublic,
    ExperimentPublic,
    FieldChannelPublic,
    FirstLayerFiltersPublic,
    GaborFitPublic,
    GradCamPublic,
    KernelsPublic,
    LabFactPublic,
    LayerSimilarityPublic,
    LinearFieldsPublic,
    OrientationTuningPublic,
    OrientationTuningRequest,
    PredictionPublic,
    TuningChannelPublic,
    TuningChannelsPublic,
    TuningLayerPublic,
    TuningStimuliPublic,
)

_lab_lock = threading.Lock()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Cancel running experiments and stop the pool; a later start (test clients restart apps) makes a new lab.
    with _lab_lock:
        lab: Lab | None = getattr(app.state, "lab", None)
        app.state.lab = None
    if lab is not None:
        await run_in_threadpool(lab.shutdown)


router = APIRouter(lifespan=_lifespan)

Responses = dict[int | str, dict[str, Any]]
PNG: Responses = {200: {"content": {"image/png": {}}, "description": "A PNG image."}, **NOT_MODIFIED}
SVG: Responses = {200: {"content": {"image/svg+xml": {}}, "description": "An SVG chart."}}
NPY: Responses = {
    200: {"content": {"application/octet-stream": {}}, "description": "A NumPy .npy array."},
    **NOT_MODIFIED,
}


def _errors(*codes: int) -> Responses:
    return {code: {"model": ErrorPublic} for code in codes}


# Charts carry no scripts or styles; the policy says so to any browser that opens one directly.
SVG_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "private, max-age=3600"}

JobId = Annotated[str, Path(description="The id returned by POST /api/v1/experiments/orientation-tuning.")]
ModelId = Annotated[str, Path(description="A model id from GET /api/v1/models.")]
AnalysisId = Annotated[str, Path(description="The id returned by POST /api/v1/analyses.")]
LayerName = Annotated[str, Path(description="A layer's dotted name, e.g. `blocks.1`.")]
Method = Annotated[
    Literal["gradient", "reverse_correlation"],
    Query(
        description="`gradient`: the centre unit's input gradient averaged over white noise; "
        "`reverse_correlation`: the spike-triggered average of white noise."
    ),
]


def get_lab(request: Request) -> Lab:
    """The app's lab, made on first use (so apps built without a lifespan, as in some tests, have one too)."""
    state = request.app.state
    lab: Lab | None = getattr(state, "lab", None)
    if lab is None:
        with _lab_lock:
            lab = getattr(state, "lab", None)
            if lab is None:
                runtime: Runtime = state.runtime
                lab = Lab(runtime.registry, fov_deg=runtime.settings.fov_deg)
                state.lab = lab
    return lab


LabDep = Annotated[Lab, Depends(get_lab)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _facts(items: tuple[facts.Fact, ...]) -> list[LabFactPublic]:
    return [
        LabFactPublic(area=f.area, text=f.text, source=f.source, refs=list(f.refs), evidence=f.evidence) for f in items
    ]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _svg(content: str) -> Response:
    return Response(content, media_type="image/svg+xml", headers=SVG_HEADERS)


def _image_route(path: str, kind: Responses, *codes: int, tag: str, summary: str) -> Any:
    """``router.get`` for a route that answers a PNG, SVG or .npy body (``kind``) or one of the errors ``codes``."""
    return router.get(path, response_class=Response, responses={**kind, **_errors(*codes)}, tags=[tag], summary=summary)


# Experiments ----------------------------------------------------------------------------------------------------

EXPERIMENTS = "/experiments"


def experiment_url(job_id: str) -> str:
    return f"/api/v1{EXPERIMENTS}/{job_id}"


def _timestamp(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None


def experiment_public(job: Job) -> ExperimentPublic:
    result = job.result if job.status == "done" else None
    return ExperimentPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=round(job.progress, 4),
        cancel_requested=job.cancel_requested.is_set(),
        created_at=datetime.fromtimestamp(job.created_at, tz=UTC),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        error=job.error,
        params=job.params,
        url=experiment_url(job.id),
        result=_tuning_public(job.id, result) if isinstance(result, OrientationTuning) else None,
    )


def _tuning_public(job_id: str, result: OrientationTuning) -> OrientationTuningPublic:
    spec = result.spec
    base = experiment_url(job_id)
    layers = []
    for tuning in result.layers:
        responsive = tuning.responsive
        preferred = tuning.preferred_deg[responsive]
        counts = [int(np.isclose(preferred, angle).sum()) for angle in spec.orientations_deg]
        cpd = tuning.preferred_cycles_per_image[responsive] / result.fov_deg
        layers.append(
            TuningLayerPublic(
                name=tuning.name,
                label=result.labels.get(tuning.name, tuning.name),
                channels=tuning.channels,
                responsive=int(responsive.sum()),
                selective_share=round(tuning.share_selective(), 4),
                median_osi=_finite(float(np.median(tuning.osi[responsive]))) if responsive.any() else None,
                median_one_minus_cv=(
                    _finite(float(np.median(tuning.one_minus_cv[responsive]))) if responsive.any() else None
                ),
                preferred_orientation_counts=counts,
                median_preferred_cycles_per_degree=_finite(float(np.median(cpd))) if cpd.size else None,
                channels_url=f"{base}/layers/{tuning.name}",
                curves_url=f"{base}/layers/{tuning.name}/tuning.svg",
            )
        )
    return OrientationTuningPublic(
        model=result.model_id,
        trained=result.trained,
        stimuli=TuningStimuliPublic(
            count=spec.stimulus_count,
            orientations_deg=list(spec.orientations_deg),
            cycles_per_image=list(spec.cycles_per_image),
            cycles_per_degree=[round(f / result.fov_deg, 4) for f in spec.cycles_per_image],
            phases=spec.phases,
            stimulus=spec.stimulus,
            response=spec.response,
            contrast=spec.contrast,
            envelope_sigma_px=spec.sigma_px if spec.stimulus == "gabor" else None,
            image_px=spec.size,
            fov_deg=result.fov_deg,
        ),
        selective_threshold=OSI_SELECTIVE,
        definitions=DEFINITIONS,
        layers=layers,
        osi_plot_url=f"{base}/osi.svg",
        brain=_facts(facts.ORIENTATION),
    )


def _finished_result(lab: Lab, job_id: str, layer: str | None = None) -> OrientationTuning:
    """The finished experiment's result (409 until it is done), and with ``layer`` a check that it measured it."""
    job = lab.jobs.get(job_id)
    if job.status != "done" or not isinstance(job.result, OrientationTuning):
        raise ExperimentNotReady(
            f"experiment '{job_id}' is {job.status}; its results exist once GET {experiment_url(job_id)} says done"
        )
    if layer is not None and layer not in job.result.labels:
        raise UnknownLayer(layer, job.result.model_id)
    return job.result


@router.post(
    f"{EXPERIMENTS}/orientation-tuning",
    status_code=202,
    response_model=ExperimentPublic,
    responses=_errors(404, 422, 503),
    tags=["experiments"],
    summary="Start an orientation-tuning experiment (virtual electrophysiology)",
    description="Shows the network gratings or Gabor patches at every orientation, spatial frequency and phase, "
    "records every channel of the chosen layers, and derives tuning curves, preferred orientations, OSI and "
    "1 − CV (definitions come with the result). Answers 202 at once with the job; poll its URL (`Location`) "
    "for `status` and `progress`, and DELETE it to cancel.",
)
def start_orientation_tuning(
    response: Response,
    runtime: RuntimeDep,
    lab: LabDep,
    body: Annotated[OrientationTuningRequest, Body()] = OrientationTuningRequest(),  # noqa: B008 - immutable default
) -> ExperimentPublic:
    model_id = body.model or runtime.registry.default_id
    card = runtime.registry.card(model_id)
    size = card.preprocess.crop
    frequencies = tuple(
        to_cycles_per_image(f, body.frequency_unit, runtime.settings.fov_deg) for f in body.spatial_frequencies
    )
    if max(frequencies) > size / 2:
        raise InvalidParameter(
            f"spatial frequencies above {size // 2} cycles per image ({size / 2 / runtime.settings.fov_deg:g} cycles "
            f"per degree) cannot be drawn on a {size}-px image"
        )
    count = round(180.0 / body.orientation_step_deg)
    spec = TuningSpec(
        orientations_deg=tuple(body.orientation_step_deg * k for k in range(count)),
        cycles_per_image=frequencies,
        phases=body.phases,
        stimulus=body.stimulus,
        response=body.response,
        contrast=body.contrast,
        sigma_px=(body.envelope_sigma_deg * size / runtime.settings.fov_deg) if body.envelope_sigma_deg else None,
        size=size,
    )
    params = {**body.model_dump(), "model": model_id}
    job = lab.start_orientation_tuning(model_id, body.layers, spec, params)
    response.headers["Location"] = experiment_url(job.id)
    return experiment_public(job)


@router.get(
    f"{EXPERIMENTS}/{{job_id}}",
    response_model=ExperimentPublic,
    responses=_errors(404),
    tags=["experiments"],
    summary="An experiment's status, progress and (when done) result",
)
def get_experiment(job_id: JobId, lab: LabDep) -> ExperimentPublic:
    return experiment_public(lab.jobs.get(job_id))


@router.delete(
    f"{EXPERIMENTS}/{{job_id}}",
    status_code=202,
    response_model=ExperimentPublic,
    responses={204: {"description": "The experiment had finished; it is now forgotten."}, **_errors(404)},
    tags=["experiments"],
    summary="Cancel an experiment",
    description="A queued experiment is cancelled at once; a running one stops after its current batch of stimuli "
    "(poll until `status` is `cancelled`). An experiment that has already finished is forgotten (204).",
)
def cancel_experiment(job_id: JobId, lab: LabDep) -> Any:
    job = lab.jobs.get(job_id)
    if job.finished:
        lab.jobs.forget(job_id)
        return Response(status_code=204)
    return experiment_public(lab.jobs.cancel(job_id))


@_image_route(
    f"{EXPERIMENTS}/{{job_id}}/osi.svg",
    SVG,
    404,
    409,
    tag="experiments",
    summary="Orientation selectivity (OSI) by layer, stem to head",
)
def get_osi_chart(job_id: JobId, lab: LabDep) -> Response:
    return _svg(osi_chart(_finished_result(lab, job_id)))


@router.get(
    f"{EXPERIMENTS}/{{job_id}}/layers/{{layer}}",
    response_model=TuningChannelsPublic,
    responses=_errors(404, 409),
    tags=["experiments"],
    summary="Every channel's tuning curve and indices in one layer",
)
def get_tuning_channels(job_id: JobId, layer: LayerName, lab: LabDep) -> TuningChannelsPublic:
    result = _finished_result(lab, job_id, layer)
    tuning = result.layer(layer)
    data = [
        TuningChannelPublic(
            index=index,
            responsive=bool(tuning.responsive[index]),
            preferred_deg=_finite(float(tuning.preferred_deg[index])),
            osi=_finite(float(tuning.osi[index])),
            one_minus_cv=_finite(float(tuning.one_minus_cv[index])),
            preferred_cycles_per_image=float(tuning.preferred_cycles_per_image[index]),
            preferred_cycles_per_degree=round(float(tuning.preferred_cycles_per_image[index]) / result.fov_deg, 4),
            curve=[round(float(v), 6) for v in tuning.curves[index]],
        )
        for index in range(tuning.channels)
    ]
    return TuningChannelsPublic(
        experiment=job_id,
        layer=layer,
        label=result.labels[layer],
        orientations_deg=list(result.spec.orientations_deg),
        data=data,
        count=len(data),
    )


@_image_route(
    f"{EXPERIMENTS}/{{job_id}}/layers/{{layer}}/tuning.svg",
    SVG,
    404,
    409,
    tag="experiments",
    summary="Polar tuning curves of a layer's most selective channels",
)
def get_tuning_chart(
    job_id: JobId,
    layer: LayerName,
    lab: LabDep,
    count: Annotated[int, Query(ge=1, le=64, description="How many channels to draw.")] = 24,
) -> Response:
    result = _finished_result(lab, job_id, layer)
    return _svg(tuning_chart(result, layer, count))


# First-layer filters and linear receptive fields ----------------------------------------------------------------


def _filters_base(model_id: str) -> str:
    return f"/api/v1/models/{model_id}/first-layer-filters"


@router.get(
    "/models/{model_id}/first-layer-filters",
    response_model=FirstLayerFiltersPublic,
    responses=_errors(404, 409, 503),
    tags=["receptive fields"],
    summary="First-layer kernels, early linear receptive fields and their Gabor fits",
    description="The first convolution's kernels, and for early layers (by default the first two curated "
    "layers whose field spans 7–40 px) each channel's linear receptive field measured like a physiologist "
    f"would, fitted with a 2-D Gabor; a fit with R² ≥ {R2_GOOD} counts as good. Computed on first request "
    "(seconds), then kept.",
)
async def get_first_layer_filters(
    model_id: ModelId,
    runtime: RuntimeDep,
    lab: LabDep,
    method: Method = "gradient",
    layers: Annotated[
        list[str] | None, Query(description="Layers to measure (repeat the parameter); early layers when omitted.")
    ] = None,
) -> FirstLayerFiltersPublic:
    runtime.registry.card(model_id)

    def compute() -> FirstLayerFiltersPublic:
        kernels = lab.kernels(model_id)
        chosen = list(dict.fromkeys(layers)) if layers else lab.early_layers(model_id)
        rendered = [lab.fields(model_id, layer, method) for layer in chosen]
        columns, rows = grid_shape(kernels.shape[0])
        model = runtime.registry.get(model_id)
        px_per_degree = model.card.preprocess.crop / lab.fov_deg
        return FirstLayerFiltersPublic(
            model=model_id,
            trained=model.trained,
            kernels=KernelsPublic(
                layer=kernels.layer,
                shape=list(kernels.shape),
                image_url=f"{_filters_base(model_id)}/kernels.png",
                zoom=kernels.zoom,
                columns=columns,
                rows=rows,
            ),
            method=method,
            r2_threshold=R2_GOOD,
            definitions=describe_thresholds(),
            layers=[_fields_public(model_id, item.fields, item.zoom, px_per_degree) for item in rendered],
            brain=_facts(facts.FIELDS),
        )

    return await runtime.run(compute)


def _fields_public(model_id: str, measured: LayerFields, zoom: int, px_per_degree: float) -> LinearFieldsPublic:
    base = f"{_filters_base(model_id)}/{measured.layer}"
    query = f"?method={measured.method}"
    columns, rows = grid_shape(len(measured.channels))
    r2 = [c.fit.r2 for c in measured.channels if c.fit is not None]
    data = []
    for channel in measured.channels:
        fit = channel.fit
        data.append(
            FieldChannelPublic(
                index=channel.channel,
                well_fit=fit is not None and fit.r2 >= R2_GOOD,
                colour=[round(float(v), 4) for v in channel.colour],
                fit=None
                if fit is None
                else GaborFitPublic(
                    r2=round(fit.r2, 4),
                    orientation_deg=round(fit.orientation_deg, 2),
                    cycles_per_pixel=round(fit.cycles_per_pixel, 4),
                    cycles_per_degree=round(fit.cycles_per_pixel * px_per_degree, 3),
                    sigma_across_px=round(fit.sigma_x, 3),
                    sigma_along_px=round(fit.sigma_y, 3),
                    centre_x_px=round(fit.x0, 3),
                    centre_y_px=round(fit.y0, 3),
                    phase_deg=round(fit.phase_deg, 2),
                ),
                shuffled_r2=None if channel.shuffled_r2 is None else round(channel.shuffled_r2, 4),
            )
        )
    return LinearFieldsPublic(
        layer=measured.layer,
        label=measured.label,
        method=measured.method,
        rf_px=measured.rf_px,
        patch_px=measured.patch_px,
        samples=measured.samples,
        channels=len(measured.channels),
        share_well_fit=round(measured.share_well_fit(), 4),
        control_share=round(measured.control_share(), 4),
        median_r2=round(float(np.median(r2)), 4) if r2 else None,
        fields_url=f"{base}/fields.png{query}",
        fits_url=f"{base}/fits.png{query}",
        r2_plot_url=f"{base}/r2.svg{query}",
        columns=columns,
        rows=rows,
        zoom=zoom,
        data=data,
    )


@_image_route(
    "/models/{model_id}/first-layer-filters/kernels.png",
    PNG,
    404,
    409,
    503,
    tag="receptive fields",
    summary="The first convolution's kernels as a tile grid",
)
async def get_kernels_png(model_id: ModelId, request: Request, runtime: RuntimeDep, lab: LabDep) -> Response:
    runtime.registry.card(model_id)
    kernels = await runtime.run(lab.kernels, model_id)
    return immutable_response(request, kernels.png, "image/png")


async def _rendered_fields(
    model_id: ModelId, layer: LayerName, runtime: RuntimeDep, lab: LabDep, method: Method = "gradient"
) -> RenderedFields:
    runtime.registry.card(model_id)
    return await runtime.run(lab.fields, model_id, layer, method)


FieldsDep = Annotated[RenderedFields, Depends(_rendered_fields)]


@_image_route(
    "/models/{model_id}/first-layer-filters/{layer}/fields.png",
    PNG,
    404,
    409,
    503,
    tag="receptive fields",
    summary="A layer's linear receptive fields as a tile grid (RGB, symmetric around 0)",
)
async def get_fields_png(request: Request, rendered: FieldsDep) -> Response:
    return immutable_response(request, rendered.fields_png, "image/png")


@_image_route(
    "/models/{model_id}/first-layer-filters/{layer}/fits.png",
    PNG,
    404,
    409,
    503,
    tag="receptive fields",
    summary="Each field's spatial profile beside its fitted Gabor",
)
async def get_fits_png(request: Request, rendered: FieldsDep) -> Response:
    return immutable_response(request, rendered.fits_png, "image/png")


@_image_route(
    "/models/{model_id}/first-layer-filters/{layer}/r2.svg",
    SVG,
    404,
    409,
    503,
    tag="receptive fields",
    summary="Histogram of the Gabor fits' R² with the threshold",
)
async def get_r2_chart(rendered: FieldsDep) -> Response:
    return _svg(rendered.r2_svg)


# Grad-CAM -------------------------------------------------------------------------------------------------------

ClassIndex = Annotated[
    int | None, Query(ge=0, description="ImageNet class index (0–999); the top prediction when omitted.")
]
CamLayer = Annotated[str | None, Query(description="A curated layer; the last convolutional stage when omitted.")]


def _cam_query(class_index: int | None, layer: str) -> str:
    parts = [f"layer={layer}"] + ([f"class_index={class_index}"] if class_index is not None else [])
    return "?" + "&".join(parts)


async def _gradcam(
    analysis_id: AnalysisId,
    runtime: RuntimeDep,
    lab: LabDep,
    class_index: ClassIndex = None,
    layer: CamLayer = None,
) -> tuple[Analysis, RenderedGradCam]:
    analysis = runtime.analyser.get(analysis_id)
    return analysis, await runtime.run(lab.gradcam, analysis.model_id, analysis.id, analysis.view, layer, class_index)


GradCamDep = Annotated[tuple[Analysis, RenderedGradCam], Depends(_gradcam)]


@router.get(
    "/analyses/{analysis_id}/gradcam",
    response_model=GradCamPublic,
    responses=_errors(404, 422, 503),
    tags=["analyses"],
    summary="Why this prediction: Grad-CAM for a class at a layer",
    description="Which regions of the input pushed the network towards the class: the layer's channels weighted "
    "by the spatial mean of the class score's gradient, summed and rectified (Selvaraju et al. 2017, computed "
    "with captum's LayerGradCam). Returns the map at the layer's resolution and URLs of the overlay and array.",
)
async def get_gradcam(gradcam: GradCamDep, runtime: RuntimeDep, class_index: ClassIndex = None) -> GradCamPublic:
    analysis, rendered = gradcam
    cam = rendered.cam
    query = _cam_query(class_index, cam.layer)
    card_layer = runtime.registry.card(analysis.model_id).layer(cam.layer)
    return GradCamPublic(
        analysis=analysis.id,
        model=analysis.model_id,
        layer=cam.layer,
        layer_label=card_layer.label if card_layer else cam.layer,
        class_index=cam.class_index,
        class_label=cam.label,
        probability=cam.probability,
        map_shape=list(cam.heatmap.shape),
        heatmap=[[round(float(v), 6) for v in row] for row in cam.heatmap],
        centre_of_mass_px=[round(v, 2) for v in cam.centre_of_mass()],
        overlay_url=f"{analysis_url(analysis.id)}/gradcam.png{query}",
        npy_url=f"{analysis_url(analysis.id)}/gradcam.npy{query}",
        method=f"Grad-CAM ({GRADCAM_SOURCE}); captum LayerGradCam, rectified, bilinear upsampling to the input",
    )


@_image_route(
    "/analyses/{analysis_id}/gradcam.png",
    PNG,
    404,
    422,
    503,
    tag="analyses",
    summary="Grad-CAM laid over the input as the network saw it",
)
async def get_gradcam_png(request: Request, gradcam: GradCamDep) -> Response:
    _, rendered = gradcam
    return immutable_response(request, rendered.overlay_png, "image/png")


@_image_route(
    "/analyses/{analysis_id}/gradcam.npy",
    NPY,
    404,
    422,
    503,
    tag="analyses",
    summary="Grad-CAM upsampled to the input size (float32 H×W)",
)
async def get_gradcam_npy(analysis_id: AnalysisId, request: Request, gradcam: GradCamDep) -> Response:
    _, rendered = gradcam
    buffer = io.BytesIO()
    np.save(buffer, rendered.cam.upsampled.astype(np.float32), allow_pickle=False)
    filename = f"{analysis_id[:12]}-gradcam-{rendered.cam.layer}-{rendered.cam.class_index}.npy"
    return immutable_response(request, buffer.getvalue(), "application/octet-stream", filename=filename)


# Comparisons ----------------------------------------------------------------------------------------------------

COMPARISON_ID = r"^[0-9a-f]{32}-[0-9a-f]{32}$"
ComparisonId = Annotated[str, Path(pattern=COMPARISON_ID, description="The id returned by POST /api/v1/comparisons.")]


def comparison_url(comparison_id: str) -> str:
    return f"/api/v1/comparisons/{comparison_id}"


def _compared(analysis: Analysis) -> ComparedAnalysisPublic:
    top = analysis.predictions[0]
    return ComparedAnalysisPublic(
        id=analysis.id,
        url=analysis_url(analysis.id),
        input_url=f"{analysis_url(analysis.id)}/input.png",
        top_prediction=PredictionPublic(label=top.label, index=top.index, probability=top.probability),
        atlas_urls={name: f"{layer_url(analysis.id, name)}/atlas.png" for name in analysis.layers},
    )


def _layer_pairs(runtime: Runtime, analysis: Analysis) -> list[tuple[str, str]]:
    return [(layer.name, layer.label) for layer in runtime.registry.card(analysis.model_id).layers]


def _compare(runtime: Runtime, first: Analysis, second: Analysis) -> list[similarity.LayerSimilarity]:
    if first.model_id != second.model_id:
        raise InvalidParameter(
            f"the two analyses used different models ('{first.model_id}' and '{second.model_id}'); "
            "compare two analyses of the same model"
        )
    return similarity.compare_layers(
        {name: layer.activation for name, layer in first.layers.items()},
        {name: layer.activation for name, layer in second.layers.items()},
        _layer_pairs(runtime, first),
    )


def _comparison_public(
    runtime: Runtime, first: Analysis, second: Analysis, layers: list[similarity.LayerSimilarity]
) -> ComparisonPublic:
    comparison_id = f"{first.id}-{second.id}"
    early, late = similarity.summary(layers)
    return ComparisonPublic(
        id=comparison_id,
        url=comparison_url(comparison_id),
        model=first.model_id,
        a=_compared(first),
        b=_compared(second),
        layers=[
            LayerSimilarityPublic(
                name=s.name,
                label=s.label,
                cosine=round(s.cosine, 6),
                pearson=None if s.pearson is None else round(s.pearson, 6),
            )
            for s in layers
        ],
        early_cosine=round(early, 6),
        late_cosine=round(late, 6),
        plot_url=f"{comparison_url(comparison_id)}/similarity.svg",
        definitions=similarity.DEFINITIONS,
        explanation=similarity.EXPLANATION,
        brain=_facts(facts.SIMILARITY),
    )


async def _side(
    name: str,
    upload: UploadFile | None,
    analysis_id: str | None,
    model_id: str,
    runtime: Runtime,
) -> Analysis:
    if (upload is None) == (analysis_id is None):
        raise InvalidParameter(f"give exactly one of file_{name} (an image) and analysis_{name} (an analysis id)")
    if analysis_id is not None:
        return runtime.analyser.get(analysis_id)
    assert upload is not None
    data = await read_upload(upload, runtime.settings.max_upload_bytes)
    analysis, _ = await runtime.run(runtime.analyser.analyse, data, model_id)
    return analysis


@router.post(
    "/comparisons",
    status_code=201,
    response_model=ComparisonPublic,
    responses=_errors(404, 409, 413, 415, 422, 503),
    tags=["comparisons"],
    summary="Compare two images layer by layer",
    description="Give each image as an upload (`file_a`, `file_b`) or as the id of an existing analysis "
    "(`analysis_a`, `analysis_b`), under one model. Returns, per curated layer, the cosine similarity of the full "
    "activation tensors and the Pearson correlation of the channel means, a plot against depth, and both "
    "analyses' ids and atlas URLs.",
)
async def create_comparison(
    response: Response,
    runtime: RuntimeDep,
    file_a: Annotated[UploadFile | None, File(description="The first image.")] = None,
    file_b: Annotated[UploadFile | None, File(description="The second image.")] = None,
    analysis_a: Annotated[str | None, Form(description="Id of an analysis to use as the first image.")] = None,
    analysis_b: Annotated[str | None, Form(description="Id of an analysis to use as the second image.")] = None,
    model: Annotated[str | None, Form(description="Model for uploads; the server's default when omitted.")] = None,
) -> ComparisonPublic:
    model_id = model or runtime.registry.default_id
    runtime.registry.card(model_id)
    first = await _side("a", file_a, analysis_a, model_id, runtime)
    second = await _side("b", file_b, analysis_b, model_id, runtime)
    if model is not None and model_id not in (first.model_id, second.model_id):
        raise InvalidParameter(f"the analyses were made with '{first.model_id}', not '{model_id}'")
    layers = await run_in_threadpool(_compare, runtime, first, second)
    body = _comparison_public(runtime, first, second, layers)
    response.headers["Location"] = body.url
    return body


def _floor_quarter(value: float) -> float:
    # The axis starts at 0, or at the quarter below the lowest value when a similarity is negative.
    return min(0.0, math.floor(value * 4) / 4)


def _analyses_of(comparison_id: str, runtime: Runtime) -> tuple[Analysis, Analysis]:
    first, second = comparison_id.split("-")
    return runtime.analyser.get(first), runtime.analyser.get(second)


@router.get(
    "/comparisons/{comparison_id}",
    response_model=ComparisonPublic,
    responses=_errors(404, 422),
    tags=["comparisons"],
    summary="A comparison (recomputed from the two cached analyses)",
)
def get_comparison(comparison_id: ComparisonId, runtime: RuntimeDep) -> ComparisonPublic:
    first, second = _analyses_of(comparison_id, runtime)
    return _comparison_public(runtime, first, second, _compare(runtime, first, second))


@_image_route(
    "/comparisons/{comparison_id}/similarity.svg",
    SVG,
    404,
    422,
    tag="comparisons",
    summary="Similarity of the two images against depth",
)
def get_comparison_chart(comparison_id: ComparisonId, runtime: RuntimeDep) -> Response:
    first, second = _analyses_of(comparison_id, runtime)
    layers = _compare(runtime, first, second)
    chart = line_plot(
        [s.name for s in layers],
        [
            Series("cosine, full maps", [s.cosine for s in layers], PALETTE[0]),
            Series("Pearson, channel means", [s.pearson for s in layers], PALETTE[1], dashed=True),
        ],
        title=f"{first.predictions[0].label} vs {second.predictions[0].label}: similarity by layer",
        y_label="similarity",
        y_range=(_floor_quarter(min(min(s.cosine, s.pearson or 0.0) for s in layers)), 1.0),
        note="Stem on the left, head on the right. DiCarlo, Zoccolan & Rust 2012; Yamins et al. 2014.",
    )
    return _svg(chart)
