"""Fixtures for the web tests: a real uvicorn server on a free loopback port, and headless Chromium.

The browser tests enforce the production Content-Security-Policy themselves (added to every document response
through Playwright routing), so an inline script or style fails here even if no middleware sets the header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, Route, sync_playwright

from tests.conftest import jpeg
from tests.live import CHROMIUM, CHROMIUM_ARGS, server_env
from tests.live import live_server as live

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'"
# Small enough that the browser test can build a file over it; the page must enforce exactly this.
LIVE_MAX_UPLOAD_BYTES = 3_000_000
STARTUP_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of ``uvicorn app.main:app`` in a subprocess, once ``/readyz`` says the default model is loaded."""
    tmp = tmp_path_factory.mktemp("live")
    settings = {
        "id_secret": "browser-test-secret",
        "weights_dir": tmp / "weights",
        "cache_mb": 512,
        "max_upload_bytes": LIVE_MAX_UPLOAD_BYTES,
    }
    env = server_env(settings, keep_outer_settings=True)
    with live(env, log_path=tmp / "uvicorn.log", timeout_s=STARTUP_TIMEOUT_S, stop_timeout_s=20) as server:
        yield server.url


@pytest.fixture(scope="session")
def coffee_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's coffee photo as a JPEG file, for the file picker."""
    path = tmp_path_factory.mktemp("photos") / "coffee.jpg"
    path.write_bytes(jpeg("coffee"))
    return path


@pytest.fixture(scope="session")
def live_coffee_id(live_server: str) -> str:
    """The id of the coffee photo's analysis on the live server (analysed through the JSON API)."""
    response = httpx.post(
        f"{live_server}/api/v1/analyses",
        files={"file": ("coffee.jpg", jpeg("coffee"), "image/jpeg")},
        timeout=120,
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """Everything that went wrong in a page: console errors, page errors, failed requests, HTTP errors."""

    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("request", lambda request: self.requests.append(f"{request.method} {request.url}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        # Chromium also logs each HTTP error response; those the test expects are not problems.
        status = re.search(r"status of (\d+)", message.text)
        if status and int(status.group(1)) in self.expected_statuses:
            return
        self.problems.append(f"console {message.type}: {message.text}")

    def _failed(self, request: Request) -> None:
        is_picture = request.resource_type == "image" or "/static/favicon" in request.url
        if is_picture and request.failure == "net::ERR_ABORTED":
            return  # an image (or the tab's icon) still loading when the test navigated away; the browser cancels it
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.problems.append(f"HTTP {response.status}: {response.url}")


def _add_csp(route: Route) -> None:
    if route.request.resource_type != "document":
        route.continue_()
        return
    response = route.fetch()
    # Enforce the production policy on top of whatever the server sends: a browser applies every policy given.
    policies = [value for value in (response.headers.get("content-security-policy"), CSP) if value]
    route.fulfill(response=response, headers={**response.headers, "content-security-policy": ", ".join(policies)})


CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`);
});
"""


@pytest.fixture()
def open_page(browser: Browser, live_server: str) -> Iterator[Callable[..., tuple[Page, Watch]]]:
    """``open_page(**context_options) -> (page, watch)``; contexts close after the test."""
    contexts = []

    def opener(**options: Any) -> tuple[Page, Watch]:
        context = browser.new_context(base_url=live_server, **options)
        context.set_default_timeout(30_000)
        context.route("**/*", _add_csp)
        context.add_init_script(CSP_REPORTER)
        contexts.append(context)
        page = context.new_page()
        watch = Watch()
        watch.attach(page)
        return page, watch

    yield opener
    for context in contexts:
        context.close()


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)
