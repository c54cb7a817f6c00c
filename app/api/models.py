"""GET /api/v1/models: the networks this server knows, their layers and weights."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.brain import illustrative_alignment, published_mappings
from app.engine.capture import module_names
from app.engine.receptive_field import rf_in_degrees
from app.runtime import Runtime, get_runtime
from app.schemas import AlignmentPublic, ErrorPublic, LayerPublic, ModelDetailPublic, ModelPublic, ModelsPublic

router = APIRouter(prefix="/models", tags=["models"])


def describe_model(runtime: Runtime, model_id: str) -> ModelPublic:
    """A model's public summary; shared by the list, the detail and the web pages."""
    registry = runtime.registry
    card = registry.card(model_id)
    weights = registry.weights_status(model_id)
    load_error = registry.load_error(model_id)
    return ModelPublic(
        id=card.id,
        name=card.name,
        family=card.family,
        description=card.description,
        default=card.id == registry.default_id,
        weights_available=weights.available,
        weights_note=weights.reason if load_error is None else load_error,
        analysable=(weights.available or registry.allow_untrained) and load_error is None,
        loaded=registry.is_loaded(model_id),
        load_error=load_error,
        input_size=card.preprocess.crop,
        num_params=registry.num_params(model_id),
    )


@router.get("", response_model=ModelsPublic, summary="List the models")
def list_models(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelsPublic:
    data = [describe_model(runtime, model_id) for model_id in runtime.registry.cards]
    return ModelsPublic(data=data, count=len(data))


def model_layers(runtime: Runtime, model_id: str, *, every_module: bool = False) -> list[LayerPublic]:
    """The curated layers (or every module) with output shape and receptive field, in network order."""
    registry = runtime.registry
    card = registry.card(model_id)
    skeleton = registry.skeleton(model_id)
    curated = {layer.name: layer.label for layer in card.layers}
    names = module_names(skeleton) if every_module else list(curated)
    shapes = registry.output_shapes(model_id)
    fields = registry.receptive_fields(model_id)
    layers = []
    for name in names:
        if name not in shapes:
            continue  # a module the forward pass never calls (e.g. drop-path at inference)
        field = fields.get(name)
        layers.append(
            LayerPublic(
                name=name,
                label=curated.get(name),
                curated=name in curated,
                shape=list(shapes[name]),
                rf_px=field.rf_px if field else None,
                stride_px=field.stride_px if field else None,
                rf_deg=(
                    round(rf_in_degrees(field.rf_px, card.preprocess.crop, runtime.settings.fov_deg), 3)
                    if field
                    else None
                ),
                covers_input=field.covers_input if field else None,
            )
        )
    return layers


@router.get(
    "/{model_id}",
    response_model=ModelDetailPublic,
    responses={404: {"model": ErrorPublic, "description": "Unknown model"}},
    summary="One model with its layers and their receptive fields",
)
def get_model(
    model_id: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    layers: Annotated[
        Literal["curated", "all"],
        Query(description="`curated`: the layers every analysis captures; `all`: every module."),
    ] = "curated",
) -> ModelDetailPublic:
    summary = describe_model(runtime, model_id)
    return ModelDetailPublic(
        **summary.model_dump(),
        fov_deg=runtime.settings.fov_deg,
        layers=model_layers(runtime, model_id, every_module=layers == "all"),
    )


def model_alignment(runtime: Runtime, model_id: str) -> AlignmentPublic:
    """Published layer → area maps beside the illustrative ladder by receptive field; shared with the pages."""
    card = runtime.registry.card(model_id)
    curated = model_layers(runtime, model_id)
    order = module_names(runtime.registry.skeleton(model_id))
    published = published_mappings(card, order)
    fov = runtime.settings.fov_deg
    return AlignmentPublic(
        model=model_id,
        fov_deg=fov,
        published=published,
        published_note=None if published else f"no published mapping for {card.name}",
        illustrative=illustrative_alignment([(layer.name, layer.rf_deg or 0.0) for layer in curated], fov),
    )


@router.get(
    "/{model_id}/alignment",
    response_model=AlignmentPublic,
    responses={404: {"model": ErrorPublic, "description": "Unknown model"}},
    summary="Which layers are compared to which brain areas, and on what grounds",
    description="`published`: best-fit layers a study committed for this network (Brain-Score), with where they "
    "collapse several areas onto one layer or run against the network's order, and why. `illustrative`: a "
    "monotonic ladder that matches each curated layer's receptive field in degrees to biological field sizes; "
    "it illustrates the trend and is not a measurement.",
)
def get_alignment(model_id: str, runtime: Annotated[Runtime, Depends(get_runtime)]) -> AlignmentPublic:
    return model_alignment(runtime, model_id)
