"""The process's engine objects and the bounded queue that runs analyses off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from fastapi import Request

from app.config import Settings
from app.engine.analysis import Analyser, Analysis
from app.engine.errors import Overloaded
from app.engine.models import ModelRegistry
from app.engine.store import AnalysisStore

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    """Built once per app. Analyses run in a small thread pool of their own so that concurrent requests queue
    instead of oversubscribing the cores, and the queue is bounded so overload is answered with 503."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry.from_folder(
            settings.models_dir,
            settings.weights_dir,
            default_id=settings.default_model,
            allow_untrained=settings.allow_untrained,
        )
        self.analyser = Analyser(
            self.registry,
            AnalysisStore[Analysis](settings.cache_mb * 1_000_000),
            secret=settings.id_secret,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        # torch's thread count is per OS thread here, so it is set inside each inference thread as it starts.
        self._executor = ThreadPoolExecutor(
            settings.inference_workers, thread_name_prefix="inference", initializer=self._set_torch_threads
        )
        self.admitted = 0
        self.capacity = settings.inference_workers + settings.max_queued_analyses
        self.draining = False
        self.preload_error: str | None = None
        self._set_torch_threads()

    def _set_torch_threads(self) -> None:
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """Run blocking ``work`` in the inference pool; refuse at once when the queue is full."""
        if self.draining:
            raise Overloaded("the server is shutting down; retry on another instance or in a moment")
        if self.admitted >= self.capacity:
            raise Overloaded(f"{self.admitted} analyses are already running or queued; retry in a few seconds")
        self.admitted += 1
        future = self._executor.submit(work, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.analysis_timeout_s)
        except TimeoutError:
            future.cancel()  # frees its place if it has not started; a running forward pass cannot be interrupted
            raise Overloaded(
                f"the analysis took longer than {self.settings.analysis_timeout_s:g} s; "
                "retry when the server is less busy"
            ) from None
        finally:
            self.admitted -= 1

    def preload_default(self) -> None:
        try:
            self.registry.get(self.registry.default_id)
        except Exception as error:  # the app keeps serving other models; /readyz reports the reason
            self.preload_error = str(error)
            logger.exception("the default model %s could not be loaded", self.registry.default_id)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
