import threading

import pytest
import torch

from app.engine.inference_pool import InferencePool


def where() -> tuple[str, int]:
    return threading.current_thread().name, torch.get_num_threads()


@pytest.fixture
def pool():
    pool = InferencePool(workers=2, threads=2)
    yield pool
    pool.shutdown()


def test_work_alone_runs_on_the_first_worker_with_every_thread(pool):
    assert pool.submit(where).result(timeout=10) == ("inference-0_0", 2)


def test_side_by_side_each_analysis_gets_one_thread(pool):
    both_running = threading.Barrier(2, timeout=10)

    def meet() -> tuple[str, int]:
        both_running.wait()  # only returns if the two run at the same time
        return where()

    first, second = pool.submit(meet), pool.submit(meet)
    assert first.result(timeout=10) == ("inference-0_0", 2)  # it started alone
    assert second.result(timeout=10) == ("inference-1_0", 1)
    # Alone again, the first worker has every thread back, whatever the other worker set.
    assert pool.submit(where).result(timeout=10) == ("inference-0_0", 2)


def test_work_waits_for_a_free_worker_and_can_be_cancelled_until_it_starts(pool):
    release = threading.Event()
    busy = [pool.submit(release.wait, 10) for _ in range(2)]
    queued, dropped = pool.submit(where), pool.submit(where)
    assert not queued.running() and dropped.cancel()
    release.set()
    assert all(future.result(timeout=10) for future in busy)
    assert queued.result(timeout=10)[1] >= 1
    assert dropped.cancelled()


def test_errors_reach_the_caller_and_the_worker_keeps_serving(pool):
    def fail() -> None:
        raise ValueError("broken image")

    with pytest.raises(ValueError, match="broken image"):
        pool.submit(fail).result(timeout=10)
    assert pool.submit(where).result(timeout=10)[0] == "inference-0_0"


def test_shutdown_finishes_queued_work_then_refuses_more():
    pool = InferencePool(workers=1, threads=1)
    release = threading.Event()
    running, queued = pool.submit(release.wait, 10), pool.submit(where)
    threading.Timer(0.2, release.set).start()
    pool.shutdown()
    assert running.result(timeout=0) and queued.result(timeout=0) == ("inference-0_0", 1)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(where)


def test_work_handed_to_a_worker_is_done_even_if_its_caller_stops_waiting(pool):
    # The server's time limit cancels the future: work already on a worker runs on and is kept.
    handed = pool.submit(where)
    assert not handed.cancel()
    assert handed.result(timeout=10)[0] == "inference-0_0"


def test_work_on_every_worker_runs_once_on_each_thread_before_later_jobs():
    pool = InferencePool(workers=2, threads=2)
    gate = threading.Event()
    ran: list[tuple[int, str]] = []
    prepared = pool.on_every_worker(lambda index: (gate.wait(10), ran.append((index, where()[0]))))
    job = pool.submit(where)
    assert not job.done()  # queued behind the first worker's preparation
    gate.set()
    assert job.result(timeout=10)[0] == "inference-0_0"
    assert all(future.result(timeout=10) for future in prepared)
    assert sorted(ran) == [(0, "inference-0_0"), (1, "inference-1_0")]
    pool.shutdown()
