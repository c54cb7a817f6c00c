import asyncio
import os
import sys
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from app.engine.errors import Overloaded
from app.main import create_app
from app.runtime import Runtime
from app.web.templating import templates
from tests.conftest import jpeg, make_settings, wait_ready
from tests.live import in_a_fresh_process, live_server, server_env


def test_inference_threads_use_the_configured_torch_threads_and_wait_at_most_1_ms_for_the_gil(tmp_path):
    runtime = Runtime(make_settings(tmp_path, torch_threads=1, preload=False))
    assert asyncio.run(runtime.run(torch.get_num_threads)) == 1
    assert sys.getswitchinterval() == pytest.approx(0.001)
    runtime.shutdown()


def test_a_full_queue_is_refused_at_once(tmp_path):
    runtime = Runtime(make_settings(tmp_path, inference_workers=1, max_queued_analyses=0, preload=False))
    release = asyncio.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        blocker = asyncio.ensure_future(
            runtime.run(lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result())
        )
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="already running or queued"):
            await runtime.run(lambda: None)
        release.set()
        await blocker

    asyncio.run(scenario())
    runtime.shutdown()


def resident_mb_once_ready(tmp_path, cache_mb: int) -> float:
    env = server_env({"weights_dir": tmp_path / "weights", "id_secret": "test-secret", "cache_mb": cache_mb})
    with live_server(env, log_path=tmp_path / f"server-{cache_mb}.log") as server:
        return server.rss_mb()


def test_the_store_budget_is_resident_once_the_server_is_ready(tmp_path):
    # Prefaulted on the first inference worker before /readyz, so that the maps the store keeps land on pages
    # already resident (``app.engine.allocator.prefault_heap``).
    small = resident_mb_once_ready(tmp_path, cache_mb=16)
    large = resident_mb_once_ready(tmp_path, cache_mb=400)
    assert large - small > 300, (small, large)


# A runtime with two workers and a 200 MB store, its default model preloaded; then one job on each worker, side by
# side, reports the page faults its thread has taken so far. In a fresh process: a new thread may take over the
# malloc arena, pages already resident, of a thread that has ended.
FAULTS_OF_EACH_WORKER_ONCE_READY = """
import asyncio, json, resource, sys, tempfile, threading
from pathlib import Path
from app.config import Settings
from app.runtime import Runtime

folder = Path(tempfile.mkdtemp())
settings = Settings(weights_dir=folder, id_secret="test", cache_mb=200, torch_threads=2, inference_workers=2)
runtime = Runtime(settings)
runtime.preload_default().result(timeout=120)
both_running = threading.Barrier(2, timeout=30)

def faults_so_far():
    both_running.wait()  # so that the two land on different workers
    return threading.current_thread().name, resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

async def side_by_side():
    return await asyncio.gather(runtime.run(faults_so_far), runtime.run(faults_so_far))

faults = dict(asyncio.run(side_by_side()))
runtime.shutdown()
print(json.dumps({"faults": faults, "page": resource.getpagesize()}))
"""


def test_every_inference_worker_touches_its_share_of_the_store_before_its_first_analysis():
    # Each worker keeps the maps it computes in a malloc arena of its own; a second worker that had not touched
    # its share faulted in every page of its analyses' maps while the store filled.
    result = in_a_fresh_process(FAULTS_OF_EACH_WORKER_ONCE_READY, "")
    faults, pages = result["faults"], 200_000_000 // result["page"]
    assert faults["inference-0_0"] > 0.9 * pages, faults  # the whole budget
    assert faults["inference-1_0"] > 0.9 * pages / 2, faults  # an equal share


# A runtime started as the server starts it; once its start-up work is done, what a full garbage collection walks.
START_UP_OBJECTS_ONCE_READY = """
import gc, json, tempfile, time
from pathlib import Path
from app.config import Settings
from app.runtime import Runtime

runtime = Runtime(Settings(weights_dir=Path(tempfile.mkdtemp()), id_secret="test", cache_mb=64))
runtime.preload_default().result(timeout=120)
deadline = time.monotonic() + 60
while not gc.get_freeze_count() and time.monotonic() < deadline:  # the render thread's work after ready
    time.sleep(0.05)
print(json.dumps({"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}))
runtime.shutdown()
"""


def test_full_garbage_collections_leave_out_the_objects_start_up_made():
    # A full collection walked torch's, FastAPI's and the model's 400,000 objects with the GIL held for about
    # 200 ms; under load the event loop, and /healthz, waited that long once in some 800 analyses.
    result = in_a_fresh_process(START_UP_OBJECTS_ONCE_READY, "")
    assert result["frozen"] > 100_000, result
    assert result["walked"] < result["frozen"] / 10, result


def native_threads_outside_python() -> set[int]:
    """This process's OS threads that Python did not start: OpenMP teams, among others."""
    python_threads = {thread.native_id for thread in threading.enumerate()}
    return {int(task) for task in os.listdir("/proc/self/task")} - python_threads


def test_web_pages_never_run_torch_on_a_web_thread(tmp_path):
    # A torch kernel on a web thread starts an OpenMP team there, and from then on every analysis got about twice as
    # slow (libgomp stops busy-waiting once its threads outnumber the cores). Pages must only read analyses.
    app = create_app(make_settings(tmp_path, torch_threads=2))
    with TestClient(app) as client:
        wait_ready(client)
        body = client.post("/api/v1/analyses", files={"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")}).json()
        client.get(body["layers"][0]["atlas_url"])  # the web threads exist from here on
        before = native_threads_outside_python()
        for url in (
            f"/analyses/{body['id']}",
            f"/analyses/{body['id']}/layers/bn2",
            "/",
            "/api/v1/models/efficientnet_lite0",
        ):
            assert client.get(url).status_code == 200, url
        assert native_threads_outside_python() - before == set()


def test_what_the_first_analysis_page_needs_is_prepared_after_start_without_a_page_view(tmp_path):
    # Receptive fields take over a second the first time (torch._dynamo's import), the templates a tenth of one;
    # the first visitor must not wait for either.
    if templates.env.cache is not None:
        templates.env.cache.clear()  # compiled by earlier tests' pages otherwise
    app = create_app(make_settings(tmp_path))
    registry = app.state.runtime.registry
    with TestClient(app) as client:
        wait_ready(client)
        deadline = time.monotonic() + 60
        while prepared(registry) != PREPARED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert prepared(registry) == PREPARED


PREPARED = {"receptive_fields", "output_shapes", "templates"}


def prepared(registry) -> set[str]:
    model_id = registry.default_id
    compiled = {name for _loader, name in templates.env.cache} if templates.env.cache is not None else set()
    done = {
        "receptive_fields": model_id in registry._fields,
        "output_shapes": model_id in registry._shapes,
        "templates": "pages/analysis.html" in compiled,
    }
    return {name for name, present in done.items() if present}
