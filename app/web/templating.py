"""Jinja2 set-up and the one rule for page vs. fragment: an htmx request that targets part of a page gets only
the block it asked for; everything else (plain browsers, htmx history restores and ``hx-select`` requests,
which htmx marks ``HX-Request-Type: full``) gets the whole page. Responses say so with ``Vary``."""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2_fragments import render_block
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup

from app.config import PROJECT_ROOT
from app.web.hierarchy import degrees

TEMPLATES_DIR = PROJECT_ROOT / "templates"
STATIC_DIR = PROJECT_ROOT / "static"
VARY = "HX-Request, HX-Request-Type"

templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def compile_templates() -> None:
    """Compile every template now (Jinja caches them): the first analysis page needs eight, about 0.15 s."""
    for name in templates.env.list_templates(extensions=["html"]):
        templates.env.get_template(name)


def static_files() -> StaticFiles:
    """The app's own CSS/JS and the vendored htmx, served at ``/static``."""
    return StaticFiles(directory=STATIC_DIR)


@lru_cache(maxsize=64)
def _fingerprint(path: str) -> str:
    try:
        return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:10]
    except OSError:
        return "missing"


def static_url(path: str) -> str:
    """``/static/<path>?v=<content hash>``: a new file gets a new URL, so browsers never run stale assets."""
    return f"/static/{path}?v={_fingerprint(path)}"


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def wants_fragment(request: Request) -> bool:
    """True for htmx requests that swap part of a page; htmx asks for the full page when it swaps the body."""
    return is_htmx(request) and request.headers.get("HX-Request-Type", "partial") != "full"


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    fragment: str = "content",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render ``template`` whole, or only its ``fragment`` block for a partial htmx request.

    A ``content`` fragment replaces the page's main area, so it carries the page's ``<title>`` for htmx to apply.
    """
    response_headers = {"Vary": VARY, **(headers or {})}
    context = {"request": request, **context}
    if wants_fragment(request):
        body = render_block(templates.env, template, fragment, context)
        if fragment == "content":
            title = render_block(templates.env, template, "title", context).strip()
            body = f"<title>{title}</title>\n{body}"
        return HTMLResponse(body, status_code=status_code, headers=response_headers)
    response = templates.TemplateResponse(request, template, context, status_code=status_code, headers=response_headers)
    assert isinstance(response, HTMLResponse)  # Starlette's _TemplateResponse is an HTMLResponse
    return response


def _number(value: float, digits: int = 3) -> str:
    """Compact number for statistics: 3 significant digits, no scientific notation for everyday sizes."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits - 1 - int(math.log10(abs(value))), 0)}f}"


def _percent(value: float, digits: int = 0) -> str:
    return f"{value * 100:.{digits}f}%"


def _params(value: int) -> str:
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value / 1e3:.0f} k"


def _megabytes(value: int) -> str:
    return f"{value / 1e6:g} MB"


def _shape(shape: list[int]) -> Markup:
    return Markup(" × ").join(str(size) for size in shape)


templates.env.filters.update(number=_number, percent=_percent, params=_params, megabytes=_megabytes, shape=_shape)
templates.env.filters["degrees"] = degrees
templates.env.globals["static_url"] = static_url
