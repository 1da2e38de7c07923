"""Sections that follow a document's own structure: text under a heading path, tables as
rows under their header. Every reader (Office, OpenDocument, e-books, web pages, Markdown)
feeds headings, paragraphs and tables to a SectionBuilder in reading order."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ragstudio.core.types import Section

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")
# Rows of a table repeat in every chunk with the header, so a cell is kept to a sane length.
MAX_CELL_CHARS = 2000
SEPARATOR = " | "
MAX_CAPTION_CHARS = 300


def normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _SPACES.sub(" ", text)
    text = re.sub(r" *\n *", "\n", text)
    return _BLANKS.sub("\n\n", text).strip()


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text[:MAX_CELL_CHARS].replace("|", "/")


def table_rows(rows: Iterable[Sequence[Any]]) -> list[list[str]]:
    """Cells as text, rows with no text dropped, trailing empty columns trimmed."""
    out = [[cell_text(c) for c in row] for row in rows]
    out = [row for row in out if any(row)]
    width = max((max((i + 1 for i, c in enumerate(row) if c), default=0) for row in out), default=0)
    return [row[:width] + [""] * (width - len(row)) for row in out]


class SectionBuilder:
    """Collects a document's blocks in reading order into sections: a new section at each
    heading (its path from the headings above it), one per table."""

    def __init__(self, metadata: dict[str, Any] | None = None, *, page: int | None = None) -> None:
        self.sections: list[Section] = []
        self.metadata = dict(metadata or {})
        self.page = page
        self._path: list[tuple[int, str]] = []
        self._lines: list[str] = []

    @property
    def path(self) -> str:
        return " > ".join(title for _, title in self._path)

    def _meta(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        if self._path:
            meta["section"] = self.path
        return meta

    def flush(self) -> None:
        text = normalize("\n".join(self._lines))
        self._lines = []
        if text:
            self.sections.append(
                Section(
                    text=text,
                    page=self.page,
                    metadata=self._meta(),
                )
            )

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            return
        self.flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, title[:200]))
        self._lines.append(title)  # the heading's words belong to its text

    def text(self, text: str) -> None:
        if text and text.strip():
            self._lines.append(text)

    def table(
        self,
        rows: Iterable[Sequence[Any]],
        *,
        numbers: Sequence[int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A table: its first row is the header. ``numbers`` are the rows' own numbers
        (a sheet's row numbers), else they count from 1 for the header."""
        raw = list(rows)
        numbered = list(zip(numbers or range(1, len(raw) + 1), raw, strict=False))
        cells = [(n, [cell_text(c) for c in row]) for n, row in numbered]
        cells = [(n, row) for n, row in cells if any(row)]
        if not cells:
            return
        width = max(max((i + 1 for i, c in enumerate(row) if c), default=0) for _, row in cells)
        cells = [(n, row[:width] + [""] * (width - len(row))) for n, row in cells]
        if len(cells) < 2 or width < 2:  # one row or one column: plain lines
            self.text("\n".join(SEPARATOR.join(c for c in row if c) for _, row in cells))
            return
        # A short text just before the table (its heading, a title row) becomes its
        # caption, repeated with the header in each chunk; a longer one stays a section.
        caption = normalize("\n".join(self._lines))
        if len(caption) > MAX_CAPTION_CHARS:
            self.flush()
            caption = ""
        self._lines = []
        header = SEPARATOR.join(cells[0][1])
        if caption:
            header = f"{caption}\n{header}"
        body = cells[1:]
        meta = {**self._meta(), **(metadata or {})}
        self.sections.append(
            Section(
                text="\n".join(SEPARATOR.join(row) for _, row in body),
                page=self.page,
                metadata=meta,
                header=header,
                rows=tuple(n for n, _ in body),
            )
        )

    def done(self) -> list[Section]:
        self.flush()
        return self.sections


# Markdown-like outlines -------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+([^\n]{1,500}?)[ \t#]*$")
_ADOC = re.compile(r"^(={1,6})[ \t]+([^\n]{1,500})$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}[ \t]*$")
_PIPE_ROW = re.compile(r"^ {0,3}\|.*\|[ \t]*$")
_PIPE_RULE = re.compile(r"^ {0,3}\|?[ \t]*:?-{1,}:?[ \t]*(\|[ \t]*:?-{1,}:?[ \t]*)+\|?[ \t]*$")


def _pipe_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def outline_sections(
    text: str, kind: str, clean: Any = None, metadata: dict[str, Any] | None = None
) -> list[Section]:
    """Sections of a Markdown, AsciiDoc or reStructuredText file: a section per heading
    (with its path), a table per pipe table (Markdown). ``clean`` turns each section's
    lines into plain text (Markdown markup removed)."""
    builder = SectionBuilder(metadata)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rst_levels: list[str] = []
    buffer: list[str] = []
    in_fence = False

    def emit() -> None:
        if buffer:
            chunk = "\n".join(buffer)
            builder.text(clean(chunk) if clean else chunk)
            buffer.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if kind == "markdown" and _FENCE.match(line):
            in_fence = not in_fence
            buffer.append(line)
            i += 1
            continue
        if in_fence:
            buffer.append(line)
            i += 1
            continue
        heading: tuple[int, str] | None = None
        if kind == "markdown":
            m = _ATX.match(line)
            if m:
                heading = (len(m.group(1)), m.group(2))
            elif _PIPE_ROW.match(line) and i + 1 < len(lines) and _PIPE_RULE.match(lines[i + 1]):
                emit()
                rows = [_pipe_cells(line)]
                i += 2
                while i < len(lines) and _PIPE_ROW.match(lines[i]):
                    rows.append(_pipe_cells(lines[i]))
                    i += 1
                if clean:
                    rows = [[clean(c) for c in row] for row in rows]
                builder.table(rows)
                continue
        elif kind == "asciidoc":
            m = _ADOC.match(line)
            if m:
                heading = (len(m.group(1)), m.group(2))
        elif kind == "rst":
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if (
                line.strip()
                and _RST_UNDERLINE.match(nxt)
                and len(nxt.rstrip()) >= len(line.rstrip())
            ):
                mark = nxt[0]
                if mark not in rst_levels:
                    rst_levels.append(mark)
                heading = (rst_levels.index(mark) + 1, line.strip())
                i += 1  # the underline
        if heading:
            emit()
            title = clean(heading[1]) if clean else heading[1]
            builder.heading(heading[0], title)
        else:
            buffer.append(line)
        i += 1
    emit()
    return builder.done()
