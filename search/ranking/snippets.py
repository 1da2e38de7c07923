"""Snippets for people: the fragment of a result's text around the query's terms, with
the terms in ``<mark>`` and everything else HTML-escaped."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Highlight:
    """A fragment of a text and where the query's terms are in it (UTF-8 byte offsets,
    as tantivy gives them)."""

    fragment: str
    ranges: tuple[tuple[int, int], ...]


def snippet_html(content: str, highlight: Highlight | None, max_chars: int) -> str:
    """The highlighted fragment, or the start of the text when no term occurs in it."""
    if highlight is not None and highlight.ranges:
        return _mark(highlight.fragment, highlight.ranges)
    head = content[:max_chars]
    return html.escape(head) + ("…" if len(content) > max_chars else "")


def _mark(fragment: str, ranges: tuple[tuple[int, int], ...]) -> str:
    raw = fragment.encode("utf-8")

    def piece(start: int, end: int) -> str:
        return html.escape(raw[start:end].decode("utf-8", errors="ignore"))

    parts: list[str] = []
    pos = 0
    for start, end in sorted(ranges):
        parts.append(piece(pos, start))
        parts.append("<mark>" + piece(start, end) + "</mark>")
        pos = end
    parts.append(piece(pos, len(raw)))
    return "".join(parts)
