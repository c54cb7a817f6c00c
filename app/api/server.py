"""GET /api/v1/server: what this server process holds right now (cache, queue, loaded models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.runtime import Runtime, get_runtime
from app.schemas import CachePublic, QueuePublic, ServerPublic

router = APIRouter(prefix="/server", tags=["server"])


@router.get("", response_model=ServerPublic, summary="Cache use, queue and loaded models of this process")
def server_status(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ServerPublic:
    store = runtime.analyser.store
    return ServerPublic(
        cache=CachePublic(analyses=len(store), bytes=store.total_bytes, budget_bytes=store.budget_bytes),
        queue=QueuePublic(admitted=runtime.admitted, capacity=runtime.capacity),
        loaded_models=[model_id for model_id in runtime.registry.cards if runtime.registry.is_loaded(model_id)],
    )
