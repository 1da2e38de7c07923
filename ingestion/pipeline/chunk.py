"""Token-aware chunking with the embedding model's own tokenizer.

Text is cut into sentence-sized units, which are packed into chunks of at most ``size``
tokens; consecutive chunks share up to ``overlap`` tokens of whole sentences. A sentence
longer than a chunk is cut by token windows.

Consecutive chunks of one section (a JSON Lines record, a PDF page, a whole text) form
*passages* of up to ``PASSAGE_TOKENS`` tokens (or one chunk, when chunks are bigger),
which BM25 also indexes whole: a document's evidence is scored together instead of each
chunk competing alone (docs/ranking.md).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from ragstudio.core.types import (
    Chunk,
    Section,
    TokenCounter,
    chunk_id,
    content_hash,
    parent_id,
)

PASSAGE_TOKENS = 1024
# A chunk is bounded in characters too: the tokenizer counts a "word" of any length (a
# base64 blob, a line of one letter repeated) as one unknown token, so a bound in tokens
# alone let one chunk grow to megabytes. Text runs about 4-6 characters a token; 16 leaves
# room for code and URLs.
MAX_CHARS_PER_TOKEN = 16

_UNIT = re.compile(r"\S.*?(?:[.!?;:]+[\"')\]]*(?=\s|$)|(?=\n)|$)")
_ROW = re.compile(r"[^\n]+")  # a table's row: one line


def _piece_text(section: Section, start: int, end: int) -> str:
    """A chunk's text: its span, after the header row when the section is a table."""
    body = section.text[start:end]
    return f"{section.header}\n{body}" if section.header else body


def _line_starts(text: str) -> list[int]:
    return [0, *(m.end() for m in re.finditer("\n", text))]


def _row_range(section: Section, starts: list[int], start: int, end: int) -> str:
    """The rows a span of a table's text holds, as ``first-last`` (or one number)."""
    first = section.rows[min(bisect_right(starts, start) - 1, len(section.rows) - 1)]
    last = section.rows[min(bisect_right(starts, max(end - 1, start)) - 1, len(section.rows) - 1)]
    return str(first) if first == last else f"{first}-{last}"


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int


class Chunker:
    def __init__(self, counter: TokenCounter, *, size: int, overlap: int) -> None:
        if size < 8:
            raise ValueError(f"chunk size must be at least 8 tokens, got {size}")
        if not 0 <= overlap <= size // 2:
            raise ValueError(
                f"chunk overlap must be between 0 and half the chunk size ({size // 2}), "
                f"got {overlap}"
            )
        self.counter = counter
        self.size = size
        self.overlap = overlap
        self.max_chars = size * MAX_CHARS_PER_TOKEN

    def chunk(
        self, document_id: int, sections: Sequence[Section], *, title: str = "", version: int = 1
    ) -> list[Chunk]:
        # The sentence-like units of every section are counted in one call: a call per
        # section costs more than its counting, and a JSON Lines file is many sections.
        spans = [
            [(m.start(), m.end()) for m in (_ROW if s.header else _UNIT).finditer(s.text)]
            for s in sections
        ]
        unit_counts = iter(
            self.counter.count(
                [
                    s.text[a:b]
                    for s, section_spans in zip(sections, spans, strict=True)
                    for a, b in section_spans
                ]
            )
        )
        header_tokens = self._header_tokens(sections)
        pieces: list[tuple[int, int, int]] = []  # (section, start, end)
        for number, (section, section_spans) in enumerate(zip(sections, spans, strict=True)):
            counts = [next(unit_counts) for _ in section_spans]
            if section.header:  # rows: never overlapped, room left for the header
                size = max(self.size - header_tokens[number], self.size // 2)
                cut = self._split_spans(section.text, section_spans, counts, size=size, overlap=0)
            else:
                cut = self._split_spans(section.text, section_spans, counts)
            pieces.extend((number, a, b) for a, b in cut)
        texts = [_piece_text(sections[n], a, b) for n, a, b in pieces]
        counts = self.counter.count(texts)
        tables = {n for n, s in enumerate(sections) if s.header}
        passages = self._passages(pieces, counts, tables)
        digests = [content_hash(t) for t in texts]
        ids = [chunk_id(document_id, i, d, version) for i, d in enumerate(digests)]
        lines = {n: _line_starts(s.text) for n, s in enumerate(sections) if s.rows}
        chunks = []
        for ordinal, (number, start, end) in enumerate(pieces):
            section = sections[number]
            first, last = passages[ordinal]
            whole = _piece_text(section, pieces[first][1], pieces[last][2])
            head = first == ordinal  # the passage's first chunk carries it
            metadata = dict(section.metadata)
            if number in lines:
                metadata["rows"] = _row_range(section, lines[number], start, end)
            chunks.append(
                Chunk(
                    id=ids[ordinal],
                    document_id=document_id,
                    ordinal=ordinal,
                    text=texts[ordinal],
                    content_hash=digests[ordinal],
                    token_count=counts[ordinal],
                    title=section.title or title,
                    page=section.page,
                    record_id=section.record_id,
                    metadata=metadata,
                    parent_id=parent_id(document_id, first, content_hash(whole), version),
                    parent_text=whole if head else "",
                    parent_chunks=tuple(ids[first : last + 1]) if head else (),
                    version=version,
                )
            )
        return chunks

    def _header_tokens(self, sections: Sequence[Section]) -> dict[int, int]:
        tables = [(n, s.header) for n, s in enumerate(sections) if s.header]
        counts = self.counter.count([h for _, h in tables]) if tables else []
        return {n: c + 1 for (n, _), c in zip(tables, counts, strict=True)}

    def _passages(
        self, pieces: Sequence[tuple[int, int, int]], counts: Sequence[int], tables: set[int]
    ) -> list[tuple[int, int]]:
        """(first, last) chunk of each chunk's passage: consecutive chunks of one section
        while their tokens add up to at most PASSAGE_TOKENS. A table's chunk is a passage of
        its own: it holds its header, and its rows are answers on their own (one passage of
        forty rows would rank its first rows for a question about the last)."""
        budget = max(PASSAGE_TOKENS, self.size)
        out: list[tuple[int, int]] = []
        group: list[int] = []
        tokens = 0
        for i, (number, _start, _end) in enumerate(pieces):
            if group and (
                pieces[group[0]][0] != number or tokens + counts[i] > budget or number in tables
            ):
                out.extend((group[0], group[-1]) for _ in group)
                group, tokens = [], 0
            group.append(i)
            tokens += counts[i]
        out.extend((group[0], group[-1]) for _ in group)
        return out

    def split(self, text: str) -> list[str]:
        spans = [(m.start(), m.end()) for m in _UNIT.finditer(text)]
        counts = self.counter.count([text[s:e] for s, e in spans])
        return [text[a:b] for a, b in self._split_spans(text, spans, counts)]

    def _split_spans(
        self,
        text: str,
        spans: list[tuple[int, int]],
        counts: list[int],
        *,
        size: int | None = None,
        overlap: int | None = None,
    ) -> list[tuple[int, int]]:
        """Where the chunks of ``text`` start and end, from its units and their token
        counts (chunks of ``size`` tokens sharing ``overlap``; the chunker's by default)."""
        if not spans:
            return []
        size = self.size if size is None else size
        overlap = self.overlap if overlap is None else overlap
        units: list[_Unit] = []
        for (start, end), tokens in zip(spans, counts, strict=True):
            if tokens <= size:
                whole = [_Unit(start, end, tokens)]
            else:
                whole = self._windows(text, start, end, size, overlap)
            for unit in whole:
                units.extend(self._within_chars(text, unit, size, overlap))
        return [(g[0].start, g[-1].end) for g in self._pack(units, size, overlap)]

    def _within_chars(self, text: str, unit: _Unit, size: int, overlap: int) -> list[_Unit]:
        """``unit``, cut into pieces of at most ``max_chars`` characters if it is longer."""
        if unit.end - unit.start <= self.max_chars:
            return [unit]
        cuts = [
            (a, min(a + self.max_chars, unit.end))
            for a in range(unit.start, unit.end, self.max_chars)
        ]
        counts = self.counter.count([text[a:b] for a, b in cuts])
        pieces: list[_Unit] = []
        for (a, b), tokens in zip(cuts, counts, strict=True):
            if tokens <= size:
                pieces.append(_Unit(a, b, tokens))
            else:  # at most max_chars characters: its token windows are within it
                pieces.extend(self._windows(text, a, b, size, overlap))
        return pieces

    def _fits(self, group: list[_Unit], tokens: int, unit: _Unit, size: int) -> bool:
        return tokens + unit.tokens <= size and (
            not group or unit.end - group[0].start <= self.max_chars
        )

    def _windows(self, text: str, start: int, end: int, size: int, overlap: int) -> list[_Unit]:
        offsets = self.counter.offsets(text[start:end])
        step = size - overlap
        windows = []
        for i in range(0, len(offsets), step):
            window = offsets[i : i + size]
            windows.append(_Unit(start + window[0][0], start + window[-1][1], len(window)))
            if i + size >= len(offsets):
                break
        return windows

    def _pack(self, units: list[_Unit], size: int, overlap: int) -> list[list[_Unit]]:
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        tokens = 0
        for unit in units:
            if current and not self._fits(current, tokens, unit, size):
                groups.append(current)
                kept: list[_Unit] = []
                kept_tokens = 0
                for previous in reversed(current):
                    if kept_tokens + previous.tokens > overlap:
                        break
                    kept.insert(0, previous)
                    kept_tokens += previous.tokens
                while kept and not self._fits(kept, kept_tokens, unit, size):
                    kept_tokens -= kept.pop(0).tokens
                current, tokens = kept, kept_tokens
            current.append(unit)
            tokens += unit.tokens
        if current:
            groups.append(current)
        return groups
