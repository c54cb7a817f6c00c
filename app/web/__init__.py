"""Browser pages (Jinja2 + htmx): ``router`` holds every page route, ``static_files()`` serves ``static/``."""

from fastapi import APIRouter

from app.web import lab, pages
from app.web.templating import static_files

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(lab.router)

__all__ = ["router", "static_files"]
