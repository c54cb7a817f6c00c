"""The tiny Markdown renderer of the "how to read this" page."""

from __future__ import annotations

from app.web.markdown import render_markdown


def test_headings_paragraphs_lists_and_inline_marks() -> None:
    html = render_markdown(
        "# Title\n\nA *first* paragraph\nwrapped on **two** lines with `code`.\n\n"
        "- **One.** an item\n  that wraps\n- two, see [the API](/docs)\n\n## Next\nEnd."
    )
    assert html == (
        '<h1 id="title">Title</h1>\n'
        "<p>A <em>first</em> paragraph wrapped on <strong>two</strong> lines with <code>code</code>.</p>\n"
        '<ul><li><strong>One.</strong> an item that wraps</li><li>two, see <a href="/docs">the API</a></li></ul>\n'
        '<h2 id="next">Next</h2>\n'
        "<p>End.</p>"
    )


def test_markup_in_the_text_is_escaped_and_unsafe_links_are_left_as_text() -> None:
    html = render_markdown('<script>alert(1)</script> and [x](javascript:alert(1)) & "quotes"')
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<a " not in html
    assert "&amp;" in html


def test_headings_can_be_demoted() -> None:
    assert render_markdown("# A", shift_headings=1) == '<h2 id="a">A</h2>'


def test_multiplication_signs_and_lone_asterisks_stay_text() -> None:
    assert render_markdown("diameter ≈ 0.125 × eccentricity, 2 * 3 = 6") == (
        "<p>diameter ≈ 0.125 × eccentricity, 2 * 3 = 6</p>"
    )
