"""Browser pages (Jinja2 + htmx): ``router`` holds every page route, ``static_files()`` serves ``static/``."""

from fastapi import APIRouter

from app.brain.knowledge import load_knowledge
from app.web import lab, pages
from app.web.templating import compile_templates, static_files

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(lab.router)


def prepare_first_page() -> None:
    """Do now what the first page view would otherwise do on its visitor's time: compile the templates (about
    0.15 s) and read the brain facts they show."""
    compile_templates()
    load_knowledge()


__all__ = ["prepare_first_page", "router", "static_files"]
