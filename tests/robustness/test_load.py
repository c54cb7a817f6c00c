"""The load test as a test (``slow``): 32 clients for CORTEXLENS_LOAD_SECONDS (default 60) against a real server.

Run it alone, printing the figures that go into docs/robustness.md, with
``python -m tests.robustness.loadtest --seconds 60``.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tests.robustness.loadtest import run_load
from tests.robustness.server import serve

SECONDS = float(os.environ.get("CORTEXLENS_LOAD_SECONDS", "60"))
CACHE_MB = 256


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 300)
def test_32_clients_mixing_uploads_and_maps(tmp_path):
    with serve(tmp_path, cache_mb=CACHE_MB) as server:
        figures = asyncio.run(run_load(server.url, SECONDS, clients=32, server=server))
    print(json.dumps(figures, indent=2))
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["retry_after_missing"] == 0
    assert figures["uploads_analysed"] > 0 and figures["uploads_left"] > 0 and figures["requests"] > 100
    assert figures["healthz_after"] == 200 and figures["server"]["queue"]["admitted"] == 0
    # Memory is bounded by the store's budget: what the store holds stays under it, and the process grows by
    # little more than that (allocator slack and render buffers).
    assert figures["server"]["cache"]["bytes"] <= CACHE_MB * 1_000_000
    rss = figures["rss_mb"]
    assert max(rss["peak_first_half"], rss["peak_second_half"]) - rss["before"] < CACHE_MB + 400, rss
