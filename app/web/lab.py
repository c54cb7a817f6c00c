"""The lab's pages: orientation tuning (a job with a progress fragment), early receptive fields, Grad-CAM and
two-image comparisons.

Each route calls the same functions the JSON API answers with (``app.api.lab``), so a page and the API never
disagree, and reports the engine's errors with the API's sentences, inline where the user acted. Every URL serves
the whole page to a browser and only its block to htmx (:func:`app.web.templating.render`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.analyses import analysis_public, read_upload
from app.api.lab import (
    COMPARISON_ID,
    create_comparison,
    experiment_public,
    get_comparison,
    get_first_layer_filters,
    get_lab,
    start_orientation_tuning,
)
from app.api.models import describe_model
from app.engine.analysis import Analysis
from app.engine.errors import EngineError, InvalidParameter, UnknownAnalysis, UnknownExperiment, UnknownLayer
from app.lab.service import Lab
from app.runtime import Runtime, get_runtime
from app.schemas import ExperimentPublic, OrientationTuningRequest
from app.web import samples
from app.web.hierarchy import build_hierarchy
from app.web.pages import (
    NoImage,
    UnknownSample,
    accepted_formats,
    analysis_context,
    error_status,
    explorer_context,
    not_found,
)
from app.web.pages import _default_explorer_layer as default_explorer_layer
from app.web.templating import VARY, render

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
LabDep = Annotated[Lab, Depends(get_lab)]

# Stimulus sets the form offers. "quick" is the small set the API tests use (a few seconds per layer on two
# cores); "standard" is the API's default request.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"orientation_step_deg": 15.0, "spatial_frequencies": [16.0, 32.0, 56.0], "phases": 2},
    "standard": {},
}
PRESET_LABELS = {
    "quick": "Quick · 73 gratings",
    "standard": "Standard · 193 gratings",
}
ALL_LAYERS = "all"
VARY_TARGET = {"Vary": f"{VARY}, HX-Target"}
POLL_SECONDS = 1


def _retry_headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": "5"} if status == 503 else None


# --- the Lab page -------------------------------------------------------------------------------------------


def lab_context(
    runtime: Runtime,
    *,
    model: str | None = None,
    layer: str = ALL_LAYERS,
    preset: str = "quick",
    error: str | None = None,
) -> dict[str, Any]:
    models = [describe_model(runtime, model_id) for model_id in runtime.registry.cards]
    runnable = [item.id for item in models if item.analysable]
    selected = model if model in runnable else runtime.registry.default_id
    card = runtime.registry.card(selected)
    return {
        "models": models,
        "selected_model": selected,
        "model_name": card.name,
        "layers": [(item.name, item.label) for item in card.layers],
        "selected_layer": layer,
        "presets": PRESET_LABELS,
        "selected_preset": preset if preset in PRESETS else "quick",
        "error": error,
        "default_model": runtime.registry.default_id,
    }


@router.get("/lab", response_class=HTMLResponse)
def lab_page(request: Request, runtime: RuntimeDep, model: str | None = None) -> HTMLResponse:
    return render(request, "pages/lab.html", lab_context(runtime, model=model))


@router.post("/lab/experiments", response_class=HTMLResponse)
def start_experiment_page(
    request: Request,
    runtime: RuntimeDep,
    lab: LabDep,
    model: Annotated[str | None, Form()] = None,
    layer: Annotated[str, Form()] = ALL_LAYERS,
    preset: Annotated[str, Form()] = "quick",
) -> Response:
    """The tuning form's target: 303 to the experiment's page, or the Lab page with the error inline."""
    try:
        if preset not in PRESETS:
            raise InvalidParameter(f"there is no stimulus set named '{preset}'; choose quick or standard")
        body = OrientationTuningRequest(
            model=model or None,
            layers=None if layer in ("", ALL_LAYERS) else [layer],
            **PRESETS[preset],
        )
        job = start_orientation_tuning(Response(), runtime, lab, body)
    except EngineError as error:
        status = error_status(error)
        context = lab_context(runtime, model=model, layer=layer, preset=preset, error=str(error))
        return render(request, "pages/lab.html", context, status_code=status, headers=_retry_headers(status))
    return RedirectResponse(f"/lab/experiments/{job.id}", status_code=303, headers={"Vary": "HX-Request"})


def experiment_context(runtime: Runtime, experiment: ExperimentPublic, layer: str | None) -> dict[str, Any]:
    result = experiment.result
    names = [item.name for item in result.layers] if result else []
    chosen = layer if layer in names else (names[0] if names else None)
    model_id = str(experiment.params.get("model") or runtime.registry.default_id)
    return {
        "experiment": experiment,
        "result": result,
        "tuning_layer": next((item for item in result.layers if item.name == chosen), None) if result else None,
        "model_name": runtime.registry.card(model_id).name,
        "preset": next(
            (name for name, values in PRESETS.items() if values and _matches(experiment.params, values)), "standard"
        ),
        "poll_seconds": POLL_SECONDS,
        "finished": experiment.status in ("done", "cancelled", "failed"),
    }


def _matches(params: dict[str, Any], values: dict[str, Any]) -> bool:
    return all(params.get(key) == value for key, value in values.items())


def _block(request: Request, block: str) -> str:
    """``block`` for htmx requests that target it; ``content`` when htmx swaps the whole of ``<main>``."""
    return "content" if request.headers.get("HX-Target", "").endswith("#main") else block


def _experiment(request: Request, lab: Lab, job_id: str) -> ExperimentPublic | HTMLResponse:
    try:
        return experiment_public(lab.jobs.get(job_id))
    except UnknownExperiment as error:
        return not_found(request, str(error))


@router.get("/lab/experiments/{job_id}", response_class=HTMLResponse)
def experiment_page(job_id: str, request: Request, runtime: RuntimeDep, lab: LabDep) -> HTMLResponse:
    """The experiment: progress while it runs (htmx polls this URL for the ``experiment`` block), then results."""
    experiment = _experiment(request, lab, job_id)
    if isinstance(experiment, HTMLResponse):
        return experiment
    context = experiment_context(runtime, experiment, None)
    return render(
        request, "pages/experiment.html", context, fragment=_block(request, "experiment"), headers=VARY_TARGET
    )


@router.get("/lab/experiments/{job_id}/layers/{layer}", response_class=HTMLResponse)
def experiment_layer_page(job_id: str, layer: str, request: Request, runtime: RuntimeDep, lab: LabDep) -> HTMLResponse:
    """The experiment with one layer's tuning curves; htmx gets only the curves panel."""
    experiment = _experiment(request, lab, job_id)
    if isinstance(experiment, HTMLResponse):
        return experiment
    context = experiment_context(runtime, experiment, layer)
    tuning = context["tuning_layer"]
    if tuning is None or tuning.name != layer:
        return not_found(request, str(UnknownLayer(layer, context["experiment"].params.get("model", ""))))
    return render(
        request, "pages/experiment.html", context, fragment=_block(request, "tuning_panel"), headers=VARY_TARGET
    )


@router.post("/lab/experiments/{job_id}/cancel", response_class=HTMLResponse)
def cancel_experiment_page(job_id: str, request: Request, runtime: RuntimeDep, lab: LabDep) -> Response:
    """Cancel a queued or running experiment (a finished one is left as it is), then show it again."""
    try:
        lab.jobs.cancel(job_id)
    except UnknownExperiment as error:
        return not_found(request, str(error))
    if request.headers.get("HX-Request") == "true":
        return experiment_page(job_id, request, runtime, lab)
    return RedirectResponse(f"/lab/experiments/{job_id}", status_code=303, headers={"Vary": "HX-Request"})


# --- early receptive fields ---------------------------------------------------------------------------------


@router.get("/lab/fields", response_class=HTMLResponse)
async def fields_page(request: Request, runtime: RuntimeDep, lab: LabDep, model: str | None = None) -> HTMLResponse:
    """First-layer kernels and early linear receptive fields beside V1 simple cells. Seconds the first time."""
    model_id = model or runtime.registry.default_id
    context: dict[str, Any] = {"fields": None, "error": None, "model_id": model_id}
    status = 200
    try:
        context["model_name"] = runtime.registry.card(model_id).name
        context["fields"] = await get_first_layer_filters(model_id, runtime, lab, method="gradient", layers=None)
    except EngineError as error:
        status = error_status(error)
        context["error"] = str(error)
        context.setdefault("model_name", model_id)
    return render(
        request, "pages/fields.html", context, fragment="fields", status_code=status, headers=_retry_headers(status)
    )


# --- Grad-CAM -----------------------------------------------------------------------------------------------


def gradcam_context(
    runtime: Runtime, lab: Lab, analysis: Analysis, layer: str | None, class_index: int | None
) -> dict[str, Any]:
    """The Grad-CAM panel's choices and image URL; nothing is computed here (the image computes on request)."""
    model = runtime.registry.get(analysis.model_id)
    layers = [
        (name, result.label)
        for name, result in analysis.layers.items()
        if result.shape[1] * result.shape[2] > 1  # Grad-CAM needs a spatial map
    ]
    chosen_layer = layer or lab.gradcam_layer(model)
    classes = [(p.index, p.label, p.probability) for p in analysis.predictions]
    chosen_class = class_index if class_index is not None else analysis.predictions[0].index
    label = next((name for index, name, _ in classes if index == chosen_class), f"class {chosen_class}")
    layer_label = next((text for name, text in layers if name == chosen_layer), chosen_layer)
    query = f"layer={chosen_layer}&class_index={chosen_class}"
    return {
        "cam_layers": layers,
        "cam_layer": chosen_layer,
        "cam_layer_label": layer_label,
        "cam_classes": classes,
        "cam_class": chosen_class,
        "cam_class_label": label,
        "cam_png": f"/api/v1/analyses/{analysis.id}/gradcam.png?{query}",
        "cam_json": f"/api/v1/analyses/{analysis.id}/gradcam?{query}",
        "cam_error": None,
    }


@router.get("/analyses/{analysis_id}/gradcam", response_class=HTMLResponse)
async def gradcam_page(
    analysis_id: str,
    request: Request,
    runtime: RuntimeDep,
    lab: LabDep,
    layer: Annotated[str | None, Query()] = None,
    class_index: Annotated[int | None, Query()] = None,
) -> HTMLResponse:
    """Grad-CAM for a class at a layer. Computed here first, so a bad choice shows its sentence, not a broken image."""
    try:
        analysis = runtime.analyser.get(analysis_id)
    except UnknownAnalysis as error:
        return not_found(request, str(error))
    context: dict[str, Any] = {
        "analysis": analysis_public(analysis),
        "model": describe_model(runtime, analysis.model_id),
    }
    status = 200
    try:
        if class_index is not None and not 0 <= class_index <= 999:
            raise InvalidParameter("class_index must be between 0 and 999 (an ImageNet class)")
        context.update(await run_in_threadpool(gradcam_context, runtime, lab, analysis, layer, class_index))
        await runtime.run(lab.gradcam, analysis.model_id, analysis.id, analysis.view, layer, class_index)
    except EngineError as error:
        status = error_status(error)
        context.update(await run_in_threadpool(gradcam_context, runtime, lab, analysis, None, None))
        context["cam_error"] = str(error)
    return render(
        request, "pages/gradcam.html", context, fragment="gradcam", status_code=status, headers=_retry_headers(status)
    )


# --- comparisons --------------------------------------------------------------------------------------------


def compare_context(runtime: Runtime, error: str | None = None) -> dict[str, Any]:
    return {
        "compare_samples": list(samples.SAMPLES.values()),
        "compare_formats": accepted_formats(),
        "compare_error": error,
        "max_upload_bytes": runtime.settings.max_upload_bytes,
    }


def analysis_lab_context(
    request: Request, runtime: Runtime, analysis: Analysis, *, compare_error: str | None = None
) -> dict[str, Any]:
    """What the analysis page's lab sections need: the Grad-CAM panel's choices and the comparison form."""
    context = compare_context(runtime, compare_error)
    context["cam_layers"] = None
    try:
        context.update(gradcam_context(runtime, get_lab(request), analysis, None, None))
    except Exception:  # the page does without the panel; the reason goes to the log
        logger.exception("the Grad-CAM panel of %s could not be prepared", analysis.id)
    return context


@router.post("/comparisons", response_class=HTMLResponse)
async def create_comparison_page(
    request: Request,
    runtime: RuntimeDep,
    analysis_a: Annotated[str, Form()],
    sample_b: Annotated[str | None, Form()] = None,
    file_b: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Compare an analysis with a sample or an upload (``POST /api/v1/comparisons``), then 303 to the result."""
    try:
        first = runtime.analyser.get(analysis_a)
    except UnknownAnalysis as error:
        return not_found(request, str(error))
    try:
        if file_b is not None and (file_b.filename or file_b.size):
            data = await read_upload(file_b, runtime.settings.max_upload_bytes)
        elif sample_b:
            if sample_b not in samples.SAMPLES:
                raise UnknownSample(sample_b)
            data = samples.sample_bytes(sample_b)
        else:
            raise NoImage()
        second, _ = await runtime.run(runtime.analyser.analyse, data, first.model_id)
        body = await create_comparison(
            Response(), runtime, analysis_a=first.id, analysis_b=second.id, model=first.model_id
        )
    except EngineError as error:
        status = error_status(error)
        context = analysis_context(runtime, first)
        context.update(explorer_context(runtime, first, default_explorer_layer(first), 0))
        context.update(analysis_lab_context(request, runtime, first, compare_error=str(error)))
        return render(request, "pages/analysis.html", context, status_code=status, headers=_retry_headers(status))
    return RedirectResponse(f"/comparisons/{body.id}", status_code=303, headers={"Vary": "HX-Request"})


@router.get("/comparisons/{comparison_id}", response_class=HTMLResponse)
def comparison_page(
    request: Request,
    runtime: RuntimeDep,
    comparison_id: Annotated[str, Path(pattern=COMPARISON_ID)],
) -> HTMLResponse:
    """Two images through one hierarchy: atlases side by side per layer, and similarity against depth."""
    try:
        comparison = get_comparison(comparison_id, runtime)
    except UnknownAnalysis as error:
        return not_found(request, str(error))
    except EngineError as error:
        return render(
            request, "pages/not_found.html", {"message": str(error)}, fragment="notice", status_code=error_status(error)
        )
    first = runtime.analyser.get(comparison.a.id)
    context = {
        "comparison": comparison,
        "model_name": runtime.registry.card(comparison.model).name,
        "stages": comparison_stages(runtime, first, [layer.name for layer in comparison.layers]),
        "similarity": {layer.name: layer for layer in comparison.layers},
    }
    return render(request, "pages/comparison.html", context)


def comparison_stages(runtime: Runtime, analysis: Analysis, names: list[str]) -> list[tuple[str, list[str]]]:
    """The compared layers grouped by the ventral-stream stage the analysis page puts them beside."""
    try:
        hierarchy = build_hierarchy(runtime, analysis)
    except Exception:  # the page does without stages; the reason goes to the log
        logger.exception("the hierarchy of %s could not be built", analysis.model_id)
        return [("Layers", names)]
    stages = [(row.area_id, [view.layer.name for view in row.layers]) for row in hierarchy.rows]
    placed = {name for _, layers in stages for name in layers}
    stages = [(area, [name for name in layers if name in names]) for area, layers in stages]
    rest = [name for name in names if name not in placed]
    return [(area, layers) for area, layers in stages if layers] + ([("Other layers", rest)] if rest else [])
