"""HTML into sections: a web page's main content (navigation, footers, cookie banners and
scripts dropped, by trafilatura), split at its headings, tables kept as rows under their
header. Pages without a main content to find (an e-book chapter, a fragment) are read
whole with the same structure."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from typing import Any

from ingestion.pipeline.structure import SectionBuilder, normalize, outline_sections
from ingestion.pipeline.text import decode_text, markdown_to_text
from ragstudio.core.types import DocumentError, Section

_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([-\w:.]{1,40})""", re.I)
# trafilatura's main content is used when it keeps at least this share of the page's text
# (below it, the page is mostly a table or a list it does not treat as content).
MIN_MAIN_SHARE = 0.15


def decode_html(data: bytes) -> str:
    """UTF-8 when the bytes are UTF-8 whatever the page declares (pages saved as UTF-8
    often keep their old declaration), else the declared charset, else Windows-1252."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return decode_text(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = _CHARSET.search(data[:4096])
    if declared:
        try:
            codec = codecs.lookup(declared.group(1).decode("ascii"))
            return data.decode(codec.name, errors="replace")
        except (LookupError, UnicodeDecodeError):
            pass
    return decode_text(data)


class _Blocks(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
    _BLOCK = {
        "p", "div", "br", "li", "ul", "ol", "section", "article", "header", "footer",
        "pre", "blockquote", "hr", "dd", "dt", "main", "aside", "nav", "figure", "figcaption",
    }  # fmt: skip
    _HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self, builder: SectionBuilder) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = builder
        self.title_parts: list[str] = []
        self._in_title = False
        self._skip = 0
        self._text: list[str] = []
        self._heading: tuple[int, list[str]] | None = None
        self._tables: list[list[list[str]]] = []  # open tables (nested ones inside cells)
        self._cell: list[str] | None = None

    def _flush_text(self) -> None:
        text = "".join(self._text)
        self._text = []
        if text.strip():
            self.builder.text(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if tag == "table":
            if not self._tables:
                self._flush_text()
            self._tables.append([])
        elif tag == "tr" and self._tables:
            self._tables[-1].append([])
        elif tag in ("td", "th") and self._tables:
            if not self._tables[-1]:
                self._tables[-1].append([])
            self._cell = []
            self._tables[-1][-1].append("")
        elif tag in self._HEADINGS and not self._tables:
            self._flush_text()
            self._heading = (self._HEADINGS[tag], [])
        elif tag in self._BLOCK:
            self._data("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag in ("td", "th") and self._tables and self._cell is not None:
            row = self._tables[-1][-1]
            row[-1] = " ".join("".join(self._cell).split())
            self._cell = None
        elif tag == "table" and self._tables:
            rows = self._tables.pop()
            if self._tables:  # a nested table's text goes into the outer cell
                self._data(" ".join(" ".join(r) for r in rows))
            else:
                self.builder.table(rows)
        elif tag in self._HEADINGS and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            self.builder.heading(level, "".join(parts))
        elif tag in self._BLOCK:
            self._data("\n")

    def _data(self, data: str) -> None:
        if self._heading is not None:
            self._heading[1].append(data)
        elif self._tables:
            if self._cell is not None:
                self._cell.append(data)
        else:
            self._text.append(data)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip:
            self._data(data)

    def close(self) -> None:
        super().close()
        while self._tables:
            self.builder.table(self._tables.pop())
        self._flush_text()


def _blocks(text: str, metadata: dict[str, Any] | None = None) -> tuple[str, list[Section]]:
    builder = SectionBuilder(metadata)
    parser = _Blocks(builder)
    try:
        parser.feed(text)
        parser.close()
    except AssertionError as exc:  # html.parser signals hopeless markup this way
        raise DocumentError(f"unreadable HTML: {exc}") from None
    return " ".join("".join(parser.title_parts).split()), builder.done()


def _main_content(text: str) -> str | None:
    import trafilatura

    try:
        return trafilatura.extract(
            text,
            output_format="markdown",
            include_tables=True,
            include_formatting=True,
            include_links=False,
            include_images=False,
            include_comments=False,
            favor_recall=True,
            prune_xpath=["//noscript", "//template"],
        )
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None


def html_sections(
    text: str, *, main_content: bool = True, metadata: dict[str, Any] | None = None
) -> list[Section]:
    """The sections of an HTML page; with ``main_content`` its boilerplate is dropped when a
    main content is found. Each section's title is its heading, else the page's title."""
    title, sections = _blocks(text, metadata)
    if main_content:
        whole = sum(len(s.text) for s in sections)
        main = _main_content(text)
        if main and len(normalize(main)) >= MIN_MAIN_SHARE * whole:
            sections = outline_sections(main, "markdown", markdown_to_text, metadata)
    if title:
        sections = [
            s if s.title else Section(
                text=s.text, title=title, page=s.page, metadata=s.metadata,
                header=s.header, rows=s.rows,
            )
            for s in sections
        ]  # fmt: skip
    return sections
