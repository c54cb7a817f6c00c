import asyncio

import pytest
import torch

from app.engine.errors import Overloaded
from app.runtime import Runtime
from tests.conftest import make_settings


def test_inference_threads_use_the_configured_torch_threads(tmp_path):
    runtime = Runtime(make_settings(tmp_path, torch_threads=1, preload=False))
    assert asyncio.run(runtime.run(torch.get_num_threads)) == 1
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
