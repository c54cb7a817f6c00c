"""Browser pages (Jinja2 + htmx): ``router`` holds every page route, ``static_files()`` serves ``static/``."""

from app.web.pages import router
from app.web.templating import static_files

__all__ = ["router", "static_files"]
