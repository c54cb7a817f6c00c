"""Experiments as jobs: queued in a pool of their own, observable while they run, cancellable, forgotten in time.

An experiment can take many seconds; running it inside a request would hold a connection and the analysis queue
for that long. Jobs run in their own small thread pool instead (one worker by default, so one experiment at a
time uses the cores beside the analyses), report progress between batches, and stop at the next batch when
cancelled. The store is bounded: when it is full the oldest finished job is forgotten, and when every stored job
is still waiting or running a new one is refused with :class:`~app.engine.errors.Overloaded`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from app.engine.errors import EngineError, Overloaded, UnknownExperiment
from app.lab.tuning import Cancelled

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "cancelled", "failed"]
FINISHED: frozenset[str] = frozenset({"done", "cancelled", "failed"})

Work = Callable[[Callable[[float], None], Callable[[], bool]], Any]
"""``work(progress, cancelled)``: reports progress in [0, 1], checks ``cancelled()`` between batches and raises
:class:`~app.lab.tuning.Cancelled` when it returns True."""


@dataclass
class Job:
    """One experiment. Fields are written by the worker and read by request threads: each write is a single
    attribute assignment, and status changes happen under the runner's lock."""

    id: str
    kind: str
    params: dict[str, Any]
    status: JobStatus = "queued"
    progress: float = 0.0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = field(default=None, repr=False)
    error: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    future: Future[None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobRunner:
    """A bounded store of jobs and the pool that runs them."""

    def __init__(self, *, workers: int = 1, max_jobs: int = 32, time_limit_s: float = 300.0) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="experiment")
        self._jobs: dict[str, Job] = {}  # insertion order = age
        self._lock = threading.Lock()
        self.max_jobs = max_jobs
        self.time_limit_s = time_limit_s
        self._closed = False

    def submit(self, kind: str, params: dict[str, Any], work: Work) -> Job:
        """Queue ``work`` and return its job at once."""
        with self._lock:
            if self._closed:
                raise Overloaded("the server is shutting down; retry on another instance or in a moment")
            if len(self._jobs) >= self.max_jobs:
                oldest = next((job for job in self._jobs.values() if job.finished), None)
                if oldest is None:
                    raise Overloaded(
                        f"{len(self._jobs)} experiments are already queued or running; retry when one has finished"
                    )
                del self._jobs[oldest.id]
            job = Job(id=secrets.token_hex(16), kind=kind, params=params)
            self._jobs[job.id] = job
            job.future = self._executor.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownExperiment(job_id) from None

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job is cancelled at once, a running one at its next batch."""
        job = self.get(job_id)
        with self._lock:
            if job.finished:
                return job
            job.cancel_requested.set()
            if job.status == "queued" and job.future is not None and job.future.cancel():
                self._finish(job, "cancelled")
        return job

    def forget(self, job_id: str) -> None:
        """Drop a finished job from the store."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.finished:
                del self._jobs[job_id]

    def __len__(self) -> int:
        return len(self._jobs)

    def shutdown(self) -> None:
        """Cancel everything and wait for the running job to reach its next batch."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            self.cancel(job.id)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.error = error
        job.finished_at = time.time()
        job.status = status

    def _run(self, job: Job, work: Work) -> None:
        with self._lock:
            if job.cancel_requested.is_set():
                self._finish(job, "cancelled")
                return
            job.status = "running"
            job.started_at = time.time()
        deadline = time.monotonic() + self.time_limit_s

        def progress(fraction: float) -> None:
            job.progress = min(1.0, max(job.progress, float(fraction)))

        def cancelled() -> bool:
            if time.monotonic() > deadline:
                raise TimeoutError
            return job.cancel_requested.is_set()

        try:
            result = work(progress, cancelled)
        except Cancelled:
            with self._lock:
                self._finish(job, "cancelled")
        except TimeoutError:
            with self._lock:
                self._finish(
                    job,
                    "failed",
                    f"the experiment ran longer than {self.time_limit_s:g} s; ask for fewer stimuli or layers",
                )
        except EngineError as error:
            with self._lock:
                self._finish(job, "failed", str(error))
        except Exception as error:  # the job reports the failure; the worker must survive it
            logger.exception("experiment %s (%s) failed", job.id, job.kind)
            with self._lock:
                self._finish(job, "failed", f"the experiment failed ({type(error).__name__}); see the server log")
        else:
            with self._lock:
                job.result = result
                job.progress = 1.0
                self._finish(job, "done")
