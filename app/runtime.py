"""The process's engine objects and the bounded queue that runs analyses off the event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import torch
from fastapi import Request

from app.config import Settings
from app.engine.allocator import keep_freed_memory, prefault_heap
from app.engine.analysis import Analyser, Analysis
from app.engine.errors import Overloaded
from app.engine.inference_pool import InferencePool
from app.engine.models import ModelRegistry
from app.engine.shared_store import SharedAnalyses
from app.engine.store import AnalysisStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The most of the store's budget touched at start-up on the first worker (the others touch a share of it): about
# 0.6 s a GB here, and some 200 analyses of the default model's maps. A larger budget fills the rest as it is used.
PREFAULT_LIMIT_BYTES = 1_000_000_000
# How long a thread may keep the GIL while another waits for it. A worker coming back from work that released it
# (the forward pass, Pillow's decoding, hashing the upload) waits until the thread holding it lets go or this
# passes: with Python's default of 5 ms, hashing an upload behind a busy Python thread took 5.2 ms instead of 0.03.
GIL_SWITCH_INTERVAL_S = 0.001


class Runtime:
    """Built once per app. Analyses run in an inference pool of their own (see ``app.engine.inference_pool``) so
    that concurrent requests share the cores instead of oversubscribing them, and the queue is bounded so overload
    is answered with 503."""

    def __init__(self, settings: Settings) -> None:
        keep_freed_memory()  # before any model is loaded, so that every forward pass reuses its memory
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
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
            shared=SharedAnalyses(settings.shared_dir, settings.cache_mb * 1_000_000) if settings.shared_dir else None,
        )
        self.threads = settings.torch_threads or torch.get_num_threads()
        self.workers = settings.inference_workers or self.threads
        self._pool: InferencePool | None = None
        self._renderer: ThreadPoolExecutor | None = None
        self.admitted = 0
        self.capacity = self.workers + settings.max_queued_analyses
        self.draining = False
        self.preload_error: str | None = None
        self.start()

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """Run blocking ``work`` in the inference pool; refuse at once when the queue is full.

        A place is held until the work itself ends, not just until its caller stops waiting: an analysis that
        outlives its time limit still occupies a worker, so it still counts against ``capacity``.
        """
        if self.draining or self._pool is None:
            raise Overloaded("the server is shutting down; retry on another instance or in a moment")
        if self.admitted >= self.capacity:
            raise Overloaded(f"{self.admitted} analyses are already running or queued; retry in a few seconds")
        self.admitted += 1
        future = self._pool.submit(work, *args)
        outcome = asyncio.wrap_future(future)
        outcome.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(outcome), self.settings.analysis_timeout_s)
        except TimeoutError:
            future.cancel()  # frees its place at once if it has not started; a running forward pass runs to its end
            raise Overloaded(
                f"the analysis took longer than {self.settings.analysis_timeout_s:g} s; "
                "retry when the server is less busy"
            ) from None

    def _release(self, outcome: asyncio.Future[Any]) -> None:
        self.admitted -= 1
        if not outcome.cancelled():
            outcome.exception()  # retrieved, so that asyncio does not log an abandoned failure as "never retrieved"

    def render_ahead(self, analysis: Analysis) -> None:
        """Start making the analysis page's first pictures on a thread of their own, while the page is on its
        way to the browser (``Analyser.render_first_view``); the page's requests for them wait for these."""
        self._work_ahead(partial(self.analyser.render_first_view, analysis))

    def preload_default(self, *page_work: Callable[[], object]) -> Future[None]:
        """Load the default model on the pool's first worker: submitted before any request, it lands there, and the
        thread that will run most forward passes is the one that has touched the weights. Loading traces the
        model's analysis pass and runs it a few times (``TracedCapture``), which warms it up too.

        Once ``/readyz`` says ready, the render thread prepares what the first analysis page would otherwise wait
        for: the default model's receptive fields and layer shapes (the first of them imports ``torch._dynamo``,
        over a second) and ``page_work``; then it takes what start-up made out of later full garbage collections
        (``_freeze_start_up_objects``).
        """
        assert self._pool is not None
        model_id = self.registry.default_id
        work = (partial(self.registry.receptive_fields, model_id), partial(self.registry.output_shapes, model_id))
        loaded = self._pool.submit(self._load_and_warm_default)
        loaded.add_done_callback(lambda _: self._work_ahead(*work, *page_work, _freeze_start_up_objects))
        return loaded

    def _load_and_warm_default(self) -> None:
        # The store keeps each analysis's maps, allocated on the worker that computed them, in its own malloc arena:
        # touched now, the first few hundred analyses do not each fault in their memory (``prefault_heap``). This
        # worker runs every analysis while it is alone and touches the whole budget, before the model loads so that
        # /readyz, which says ready once it has, waits for it too.
        prefault_heap(self._prefault_bytes)
        try:
            self.registry.get(self.registry.default_id)
        except Exception as error:  # the app keeps serving other models; /readyz reports the reason
            self.preload_error = str(error)
            logger.exception("the default model %s could not be loaded", self.registry.default_id)
        # The others run analyses only beside this one and touch an equal share, from now on: side by side with
        # the load, it made the start 0.3 s slower. Queued before ready is said, so ahead of any analysis of theirs.
        pool = self._pool
        if pool is not None:  # None: shutting down
            pool.on_every_worker(self._prefault_share)

    @property
    def _prefault_bytes(self) -> int:
        return min(self.settings.cache_mb * 1_000_000, PREFAULT_LIMIT_BYTES)

    def _prefault_share(self, worker: int) -> None:
        if worker > 0:
            prefault_heap(self._prefault_bytes // self.workers)

    def _work_ahead(self, *work: Callable[[], object]) -> None:
        """Run ``work`` on the render thread, in order, unless the runtime is closing."""
        renderer = self._renderer
        if renderer is None or self.draining:
            return
        try:
            for job in work:
                renderer.submit(job).add_done_callback(_log_failure_ahead)
        except RuntimeError:  # shut down in the meantime
            pass

    def start(self) -> None:
        """Open for work at each lifespan start: one app may be served more than once (test clients end and
        start its lifespan again), and a pool that has been shut down accepts nothing."""
        if self._pool is None:
            self._pool = InferencePool(self.workers, self.threads)
        if self._renderer is None:
            self._renderer = ThreadPoolExecutor(1, thread_name_prefix="render-ahead")
        self.draining = False

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.shutdown(wait=True, cancel_futures=True)


def _freeze_start_up_objects() -> None:
    """Exempt what start-up made, and keeps for good, from Python's full garbage collections.

    Torch, FastAPI, pydantic and the loaded models leave some 400,000 objects that every full collection walked,
    holding the GIL for about 200 ms (once in some 800 analyses under load, when ``/healthz`` took as long).
    Collected once and frozen, they are never walked again. Refcounting still frees any of them that is dropped;
    only a reference cycle among them would stay, and start-up objects are kept for good.
    """
    gc.collect()
    gc.freeze()


def _log_failure_ahead(done: Future[Any]) -> None:
    # The page's own request renders the picture (or works out the facts) again and answers with the error; this
    # is only the log.
    if not done.cancelled() and done.exception() is not None:
        logger.error("work ahead of the pages failed", exc_info=done.exception())


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain ``def`` dependency on a worker thread, a hand-off on every request for a lookup.
    runtime: Runtime = request.app.state.runtime
    return runtime
