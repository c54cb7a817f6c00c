"""Load test: concurrent clients mixing uploads of distinct photos with map fetches, against 127.0.0.1 only.

    python -m tests.robustness.loadtest [--seconds 60] [--clients 32] [--url http://127.0.0.1:8000]

Without ``--url`` it starts its own server (default settings). It prints the figures as JSON: requests by kind
and status, errors (anything but a 2xx or a deliberate 503), latency percentiles, and the server's resident
memory before, at its peak and after (read from /proc when it started the server). Every loop is bounded in
time and in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from tests.robustness.photos import distinct_jpegs
from tests.robustness.server import Server, serve

UPLOAD_SHARE = 0.25  # the rest are map fetches: atlases, single channels and input pictures
MAX_REQUESTS = 200_000  # a bound on the count, whatever the duration
REQUEST_TIMEOUT_S = 90.0
RECENT = 16  # map fetches go to the analyses uploaded last
TOP_UP = 200  # photos made at a time when the pool runs low (a quiet machine analyses about 20 a second)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    retry_after_missing: int = 0
    analyses: list[dict] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def record(self, kind: str, status: int, seconds: float, error: str | None = None) -> None:
        self.statuses[kind, status] += 1
        self.latencies.setdefault(kind, []).append(seconds)
        if error:
            self.errors.append(error)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(array, 50)), 1),
        "p90_ms": round(float(np.percentile(array, 90)), 1),
        "p99_ms": round(float(np.percentile(array, 99)), 1),
        "max_ms": round(float(array.max()), 1),
    }


async def client_loop(
    http: httpx.AsyncClient, tally: Tally, uploads: list[bytes], deadline: float, rng: random.Random
) -> None:
    while time.monotonic() < deadline and tally.requests < MAX_REQUESTS:
        if uploads and (not tally.analyses or rng.random() < UPLOAD_SHARE):
            retry_after = await upload(http, tally, uploads.pop())
            # A well-behaved client waits as told before its next request.
            await asyncio.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))
        else:
            await fetch_map(http, tally, rng)


async def upload(http: httpx.AsyncClient, tally: Tally, data: bytes) -> float:
    """Upload ``data``; return how long the server asked us to wait (0 unless it answered 503)."""
    started = time.perf_counter()
    try:
        response = await http.post("/api/v1/analyses", files={"file": ("photo.jpg", data, "image/jpeg")})
    except httpx.HTTPError as error:
        tally.record("upload", 0, time.perf_counter() - started, f"upload: {error!r}")
        return 0.0
    elapsed = time.perf_counter() - started
    if response.status_code in (200, 201):
        tally.analyses.append(response.json())
        tally.record("upload", response.status_code, elapsed)
    elif response.status_code == 503:
        retry_after = response.headers.get("retry-after", "")
        tally.retry_after_missing += not retry_after.isdigit()
        tally.record("upload", 503, elapsed)
        return float(retry_after) if retry_after.isdigit() else 1.0
    else:
        tally.record("upload", response.status_code, elapsed, f"upload: {response.status_code} {response.text[:200]}")
    return 0.0


async def fetch_map(http: httpx.AsyncClient, tally: Tally, rng: random.Random) -> None:
    # People look at what they have just uploaded: the recent analyses, which the store still holds.
    analysis = rng.choice(tally.analyses[-RECENT:])
    layer = rng.choice(analysis["layers"])
    choice = rng.random()
    if choice < 0.45:
        kind, url = "atlas", layer["atlas_url"]
    elif choice < 0.9:
        kind, url = "channel", f"{layer['channels_url']}/{rng.randrange(layer['shape'][0])}.png"
    else:
        kind, url = "input", analysis["input_url"]
    started = time.perf_counter()
    try:
        response = await http.get(url)
    except httpx.HTTPError as error:
        tally.record(kind, 0, time.perf_counter() - started, f"{kind}: {error!r}")
        return
    ok = response.status_code == 200 and response.content.startswith(b"\x89PNG")
    # An analysis evicted from the store (least recently used first) is a 404 by design, not an error.
    evicted = response.status_code == 404 and "left the cache" in response.text
    error = None if ok or evicted else f"{kind}: {response.status_code} {response.text[:200]}"
    tally.record(kind, response.status_code, time.perf_counter() - started, error)


async def top_up(uploads: list[bytes], deadline: float, seed: int) -> None:
    batch = 0
    while time.monotonic() < deadline:
        if len(uploads) < TOP_UP:
            batch += 1
            uploads[:0] = await asyncio.to_thread(distinct_jpegs, TOP_UP, seed + 1000 * batch)
        await asyncio.sleep(0.2)


async def sample_memory(server: Server | None, deadline: float, samples: list[tuple[float, float]]) -> None:
    while server is not None and time.monotonic() < deadline:
        samples.append((time.monotonic(), server.rss_mb()))
        await asyncio.sleep(0.5)


async def run_load(url: str, seconds: float, clients: int, server: Server | None = None, seed: int = 0) -> dict:
    """Drive ``clients`` concurrent clients at ``url`` (loopback only) for ``seconds``; return the figures."""
    if urlsplit(url).hostname not in LOOPBACK:
        raise ValueError(f"the load test only targets this machine (127.0.0.1), not {url}")
    # Distinct photos, so that no upload is answered from the store: a pool made beforehand, topped up while
    # the test runs if the server gets through it (``uploads_left`` in the figures says it never ran dry).
    uploads = distinct_jpegs(max(50, int(seconds * 25)), seed=seed)
    rng = random.Random(seed)
    tally = Tally()
    # uvicorn closes idle connections after 5 s, httpx's default expiry: a client back from a 5-s Retry-After
    # would race the server's close. Expiring sooner is what a well-behaved client of this server does.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, trust_env=False) as http:
        for data in [uploads.pop() for _ in range(4)]:  # warm-up: analyses to fetch maps from
            await upload(http, tally, data)
        tally.statuses.clear()
        tally.latencies.clear()
        rss_before = server.rss_mb() if server else None
        started = time.monotonic()
        deadline = started + seconds
        rss: list[tuple[float, float]] = []
        loops = [client_loop(http, tally, uploads, deadline, random.Random(rng.random())) for _ in range(clients)]
        await asyncio.gather(sample_memory(server, deadline, rss), top_up(uploads, deadline, seed), *loops)
        wall = time.monotonic() - started
        health = (await http.get("/healthz")).status_code
        status = (await http.get("/api/v1/server")).json()
    everything = [latency for values in tally.latencies.values() for latency in values]
    by_status = Counter(status for (_, status) in tally.statuses.elements())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / wall, 1),
        "by_kind": {
            kind: {"requests": len(values), **percentiles(values)} for kind, values in sorted(tally.latencies.items())
        },
        "statuses": {str(code): count for code, count in sorted(by_status.items())},
        "uploads_left": len(uploads),
        "uploads_analysed": tally.statuses["upload", 201] + tally.statuses["upload", 200],
        "overloaded_503": tally.statuses["upload", 503],
        "retry_after_missing": tally.retry_after_missing,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
        "latency": percentiles(everything),
        # Peaks in each half of the run: a flat second half is memory that stopped growing.
        "rss_mb": {
            "before": round(rss_before, 1) if rss_before else None,
            "peak_first_half": _peak(rss, started, started + seconds / 2),
            "peak_second_half": _peak(rss, started + seconds / 2, deadline),
            "after": round(server.rss_mb(), 1) if server else None,
        },
        "server": status,
        "healthz_after": health,
    }


def _peak(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    within = [rss for at, rss in samples if start <= at < end]
    return round(max(within), 1) if within else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--url", help="a server already running on this machine; default: start one")
    args = parser.parse_args()
    if args.url:
        figures = asyncio.run(run_load(args.url, args.seconds, args.clients))
    else:
        with tempfile.TemporaryDirectory() as folder, serve(Path(folder)) as server:
            figures = asyncio.run(run_load(server.url, args.seconds, args.clients, server))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
