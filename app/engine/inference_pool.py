"""Threads that run forward passes, sized so that torch's OpenMP threads never outnumber the cores.

Two facts about torch on the CPU shape this (both measured on the 2-core machine in ``docs/performance.md``):

- OpenMP gives every OS thread that runs a parallel region a team of its own, and libgomp busy-waits only while
  its threads do not outnumber the cores. One extra team, even an idle one, made every forward pass about twice as
  slow. A thread that only ever runs with one thread has no team.
- One forward pass on two threads is only about 1.2× faster than on one, so two one-thread passes side by side
  finish more analyses per second than two-thread passes one after another.

So the first worker is the only one that ever runs with several threads: alone, it uses them all (lowest
latency); while other workers are busy it leaves a core to each of them, and they run with one thread each.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass
class _Job:
    work: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)


class InferencePool:
    """Run blocking work on ``workers`` threads sharing ``threads`` torch threads; first come, first served.

    ``submit`` returns a future that can be cancelled while its work waits for a worker. Work submitted while
    every worker is idle goes to the first worker.
    """

    def __init__(self, workers: int, threads: int) -> None:
        self.threads = threads
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"inference-{i}") for i in range(workers)]
        self._idle = list(range(workers))  # kept sorted, so that the first worker is taken first
        self._pending: deque[_Job] = deque()
        self._lock = threading.Condition()
        self._closed = False
        for index, worker in enumerate(self._workers):
            worker.submit(_pin_threads, threads if index == 0 else 1)

    def submit(self, work: Callable[..., T], *args: object) -> Future[T]:
        job = _Job(work, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference pool is shut down")
            self._pending.append(job)
            if self._idle:
                self._start_next(self._idle.pop(0))
        return job.future

    def on_every_worker(self, work: Callable[[int], object]) -> list[Future[Any]]:
        """Run ``work(index)`` once on each worker's own thread, ahead of any work submitted after: for what is kept
        per thread, such as its malloc arena. It does not count as a job; a worker takes its next job once done."""
        return [worker.submit(work, index) for index, worker in enumerate(self._workers)]

    def shutdown(self) -> None:
        """Refuse new work, finish everything queued and running, then end the threads."""
        with self._lock:
            self._closed = True
            self._lock.wait_for(lambda: not self._pending and len(self._idle) == len(self._workers))
        for worker in self._workers:
            worker.shutdown(wait=True)

    def _start_next(self, index: int) -> None:
        """Give worker ``index`` the oldest job still wanted, or mark it idle. Called with the lock held.

        A job counts as started from here on (its future is running, so it can no longer be cancelled): a caller
        that stops waiting a moment later still gets its work done and kept, and only queued work is dropped.
        """
        while self._pending:
            job = self._pending.popleft()
            if job.future.set_running_or_notify_cancel():
                # The first worker gets every thread the other busy workers leave free; the others get one.
                busy_others = len(self._workers) - len(self._idle) - 1
                threads = max(1, self.threads - busy_others) if index == 0 else 1
                self._workers[index].submit(self._execute, job, index, threads)
                return
        self._idle.append(index)
        self._idle.sort()
        self._lock.notify_all()

    def _execute(self, job: _Job, index: int, threads: int) -> None:
        result: Any = None
        error: BaseException | None = None
        torch.set_num_threads(threads)
        try:
            result = job.work(*job.args)
        except BaseException as raised:
            error = raised
        # This worker is free again before its caller hears back, so the caller's next request finds it free.
        with self._lock:
            self._start_next(index)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


def _pin_threads(threads: int) -> None:
    """Give this worker thread its thread count for good.

    torch sets a thread's OpenMP thread count from the last ``set_num_threads`` of *any* thread when that thread
    first asks for it; asking once here, and setting it again after, keeps another worker's count from leaking in.
    """
    torch.set_num_threads(threads)
    torch.get_num_threads()
    torch.set_num_threads(threads)
