"""GET /api/v1/models: the networks this server knows, their layers and weights."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.engine.capture import module_names, output_shapes
from app.runtime import Runtime, get_runtime
from app.schemas import ErrorPublic, LayerPublic, ModelDetailPublic, ModelPublic, ModelsPublic

router = APIRouter(prefix="/models", tags=["models"])


def describe_model(runtime: Runtime, model_id: str) -> ModelPublic:
    """A model's public summary; shared by the list, the detail and the web pages."""
    registry = runtime.registry
    card = registry.card(model_id)
    weights = registry.weights_status(model_id)
    load_error = registry.load_error(model_id)
    skeleton = registry.skeleton(model_id)
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
        num_params=sum(parameter.numel() for parameter in skeleton.parameters()),
    )


@router.get("", response_model=ModelsPublic, summary="List the models")
def list_models(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelsPublic:
    data = [describe_model(runtime, model_id) for model_id in runtime.registry.cards]
    return ModelsPublic(data=data, count=len(data))


@router.get(
    "/{model_id}",
    response_model=ModelDetailPublic,
    responses={404: {"model": ErrorPublic, "description": "Unknown model"}},
    summary="One model with its layers",
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
    card = runtime.registry.card(model_id)
    skeleton = runtime.registry.skeleton(model_id)
    curated = {layer.name: layer.label for layer in card.layers}
    names = module_names(skeleton) if layers == "all" else list(curated)
    shapes = output_shapes(skeleton, card.preprocess.crop, names)
    return ModelDetailPublic(
        **summary.model_dump(),
        layers=[
            LayerPublic(name=name, label=curated.get(name), curated=name in curated, shape=list(shapes[name]))
            for name in names
            if name in shapes
        ],
    )
