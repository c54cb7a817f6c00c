"""Just enough Markdown for the project's own prose (the "how to read this" page), without a dependency.

Headings (``#``..``###``), paragraphs, ``-`` lists with wrapped items, ``**bold**``, ``*italic*``, ``code`` and
``[links](url)``. Everything is HTML-escaped first, so the text can never inject markup.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    # Only same-site or http(s) links: the text is trusted, but a javascript: URL would still be refused by CSP.
    (re.compile(r"\[([^\]]+)\]\(((?:https?://|/|#)[^)\s]*)\)"), r'<a href="\2">\1</a>'),
]
_HEADING = re.compile(r"^(#{1,3})\s+(.*)$")
_ITEM = re.compile(r"^[-*]\s+(.*)$")


def _inline(text: str) -> str:
    html = str(escape(text))
    for pattern, replacement in _INLINE:
        html = pattern.sub(replacement, html)
    return html


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_markdown(source: str, *, shift_headings: int = 0) -> Markup:
    """Render ``source`` to safe HTML; ``shift_headings`` demotes headings (1 turns ``#`` into ``<h2>``)."""
    blocks: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
            items.clear()

    for raw in source.splitlines():
        line = raw.strip()
        if not line:
            flush()
            continue
        heading = _HEADING.match(line)
        item = _ITEM.match(line)
        if heading:
            flush()
            level = min(len(heading.group(1)) + shift_headings, 6)
            text = heading.group(2).strip()
            blocks.append(f'<h{level} id="{_slug(text)}">{_inline(text)}</h{level}>')
        elif item:
            if paragraph:
                flush()
            items.append(item.group(1))
        elif items and raw[:1].isspace():
            items[-1] += " " + line  # a wrapped list item
        else:
            if items:
                flush()
            paragraph.append(line)
    flush()
    return Markup("\n".join(blocks))  # noqa: S704 - built from escaped text only
