"""The experiment job runner: progress, cancellation, failure, time limit and the bounded store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from app.engine.errors import Overloaded, UnknownExperiment
from app.lab.jobs import Job, JobRunner
from app.lab.tuning import Cancelled


def wait(job: Job, timeout: float = 10.0) -> Job:
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.finished, job
    return job


def batches(count: int, pause: float = 0.0, result: object = "done"):  # type: ignore[no-untyped-def]
    def work(progress: Callable[[float], None], cancelled: Callable[[], bool]) -> object:
        for index in range(count):
            if cancelled():
                raise Cancelled
            time.sleep(pause)
            progress((index + 1) / count)
        return result

    return work


@pytest.fixture
def runner() -> Iterator[JobRunner]:
    jobs = JobRunner(workers=1, max_jobs=4, time_limit_s=5.0)
    yield jobs
    jobs.shutdown()


def test_a_job_reports_progress_and_its_result(runner: JobRunner) -> None:
    job = wait(runner.submit("test", {"n": 5}, batches(5, result=42)))
    assert (job.status, job.progress, job.result, job.error) == ("done", 1.0, 42, None)
    assert job.started_at is not None and job.finished_at is not None and job.finished_at >= job.started_at
    assert runner.get(job.id) is job


def test_a_running_job_stops_at_the_next_batch_when_cancelled(runner: JobRunner) -> None:
    job = runner.submit("test", {}, batches(1000, pause=0.01))
    while job.status != "running" or job.progress == 0:
        time.sleep(0.01)
    runner.cancel(job.id)
    wait(job)
    assert job.status == "cancelled" and 0 < job.progress < 1 and job.result is None


def test_a_queued_job_is_cancelled_before_it_starts(runner: JobRunner) -> None:
    gate = threading.Event()

    def blocker(progress: Callable[[float], None], cancelled: Callable[[], bool]) -> None:
        gate.wait(5)

    first = runner.submit("test", {}, blocker)
    queued = runner.submit("test", {}, batches(3))
    assert queued.status == "queued"
    runner.cancel(queued.id)
    assert queued.status == "cancelled" and queued.started_at is None
    gate.set()
    assert wait(first).status == "done"


def test_failures_and_time_limits_are_reported_not_raised() -> None:
    jobs = JobRunner(time_limit_s=0.2)
    try:

        def broken(progress: Callable[[float], None], cancelled: Callable[[], bool]) -> None:
            raise RuntimeError("boom")

        failed = wait(jobs.submit("test", {}, broken))
        assert failed.status == "failed" and "RuntimeError" in (failed.error or "")
        slow = wait(jobs.submit("test", {}, batches(1000, pause=0.01)))
        assert slow.status == "failed" and "longer than 0.2 s" in (slow.error or "")
    finally:
        jobs.shutdown()


def test_the_store_is_bounded(runner: JobRunner) -> None:
    finished = [wait(runner.submit("test", {}, batches(1))) for _ in range(4)]
    newest = wait(runner.submit("test", {}, batches(1)))
    assert len(runner) == 4
    with pytest.raises(UnknownExperiment):
        runner.get(finished[0].id)  # the oldest finished job made room
    assert runner.get(newest.id) is newest
    gate = threading.Event()
    for _ in range(4):
        runner.submit("test", {}, lambda progress, cancelled: gate.wait(5))
    with pytest.raises(Overloaded, match="already queued or running"):
        runner.submit("test", {}, batches(1))
    gate.set()


def test_forget_and_unknown_ids(runner: JobRunner) -> None:
    job = wait(runner.submit("test", {}, batches(1)))
    runner.forget(job.id)
    with pytest.raises(UnknownExperiment, match="never existed or has been forgotten"):
        runner.get(job.id)


def test_shutdown_cancels_and_refuses_new_work() -> None:
    jobs = JobRunner()
    running = jobs.submit("test", {}, batches(10_000, pause=0.01))
    while running.status != "running":
        time.sleep(0.01)
    jobs.shutdown()
    assert running.status == "cancelled"
    with pytest.raises(Overloaded):
        jobs.submit("test", {}, batches(1))
