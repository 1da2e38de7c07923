"""Turn uploaded bytes into text sections. Formats are detected by content first; the
file name only breaks ties between formats that look alike (Markdown vs plain text)."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Any

from ragstudio.core.types import DocumentError, Section

TEXT = "text"
MARKDOWN = "markdown"
HTML = "html"
PDF = "pdf"
JSONL = "jsonl"
FORMATS = (TEXT, MARKDOWN, HTML, PDF, JSONL)

CONTENT_TYPES = {
    TEXT: "text/plain",
    MARKDOWN: "text/markdown",
    HTML: "text/html",
    PDF: "application/pdf",
    JSONL: "application/jsonl",
}

# Signatures of common binary formats, so the error names what was uploaded.
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"PK\x03\x04", "ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\x7fELF", "executable"),
    (b"MZ", "Windows executable"),
    (b"\xd0\xcf\x11\xe0", "legacy Office document"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"OggS", "Ogg media"),
    (b"ID3", "MP3 audio"),
    (b"RIFF", "RIFF media"),
    (b"SQLite format 3\x00", "SQLite database"),
]

_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.I)
_HTML_TAGS = re.compile(rb"<(p|div|h[1-6]|table|ul|ol|li|br|span|a)[\s>/]", re.I)
# Patterns that meet untrusted text never backtrack far: no quantifier crosses a newline,
# none is nested, and every open-ended one is bounded, so each runs in linear time (an
# unbounded `\s*` after `^` under re.M, or `.+?` on a long line, was quadratic: 16,000
# newlines took 2.9 s in the upload request, a 24 KB line of "_a" 1.9 s in the worker).
_MD_SIGNS = re.compile(
    r"^(?:#{1,6} \S|```|[ \t]{0,16}[-*+] \S|[ \t]{0,16}\d{1,9}\. \S|> \S)"
    r"|\[[^\]\n]{1,200}\]\([^)\n]{1,500}\)",
    re.M,
)
_MD_EXTENSIONS = {".md", ".markdown", ".mdown", ".mkd"}
_HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}


def _sniff_binary(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    head = data[:8192]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary data"
    return None


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 when that reads as
    text. Anything else is binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentError("cannot decode the file as UTF-16 text") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise DocumentError("not a text file: the content is neither UTF-8 nor UTF-16") from None
    controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > len(text[:8192]) * 0.01:
        raise DocumentError("not a text file: the content looks like binary data")
    return text


# The request sniffs only this much of an upload; the worker parses the whole file.
SNIFF_BYTES = 8192
_TEXT_KEY = re.compile(r'"text"\s*:')
_JSONL_EXTENSIONS = {".jsonl", ".ndjson"}


def _head_text(data: bytes, limit: int = SNIFF_BYTES) -> str:
    """The start of the text, for sniffing; a cut through a UTF-8 sequence is allowed."""
    if len(data) <= limit:
        return decode_text(data)
    head = data[:limit]
    for cut in range(4):
        try:
            return head[: limit - cut].decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
    return decode_text(head)


def detect_format(data: bytes, filename: str = "") -> str:
    """The format of ``data``; raises DocumentError for empty, binary or unknown input."""
    if not data.strip():
        raise DocumentError("empty file: there is no text to index")
    if data.startswith(b"%PDF-"):
        return PDF
    binary = _sniff_binary(data)
    if binary:
        raise DocumentError(f"unsupported file type: {binary}")
    suffix = PurePath(filename).suffix.lower()
    if _HTML_START.match(data[:1024]):
        return HTML
    text_head = _head_text(data)
    stripped = text_head.lstrip()
    first_line = stripped.split("\n", 1)[0].strip()
    if first_line.startswith("{"):
        try:
            record = json.loads(first_line)
        except ValueError:
            record = None
        except RecursionError:
            raise DocumentError("the first line is JSON nested too deeply to read") from None
        if isinstance(record, dict) and "text" in record:
            return JSONL
        # A first record longer than the sniffed head cannot be parsed from it: then a
        # "text" key in what was read, or the name, says JSON Lines (the parser reads every
        # record in full).
        cut = "\n" not in stripped and len(data) >= SNIFF_BYTES
        if record is None and cut and (_TEXT_KEY.search(first_line) or suffix in _JSONL_EXTENSIONS):
            return JSONL
    if suffix in _HTML_EXTENSIONS and _HTML_TAGS.search(data[:SNIFF_BYTES]):
        return HTML
    if suffix in _MD_EXTENSIONS:
        return MARKDOWN
    if suffix in _JSONL_EXTENSIONS:
        raise DocumentError("JSON Lines file whose first record has no 'text' field")
    if suffix not in {".txt", ".text", ""} and len(_MD_SIGNS.findall(text_head)) >= 3:
        return MARKDOWN
    return TEXT


def parse_document(
    data: bytes, filename: str = "", *, max_bytes: int | None = None
) -> list[Section]:
    """Sections of text from one uploaded file. Raises DocumentError with a message for
    people: oversized, empty, binary, unreadable, or no text at all."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentError(
            f"file too large: {len(data):,} bytes (the limit is {max_bytes:,} bytes)"
        )
    fmt = detect_format(data, filename)
    if fmt == PDF:
        sections = _parse_pdf(data)
    elif fmt == JSONL:
        sections = _parse_jsonl(decode_text(data))
    elif fmt == HTML:
        sections = [Section(text=t, title=title) for title, t in [_parse_html(decode_text(data))]]
    elif fmt == MARKDOWN:
        sections = [Section(text=_markdown_to_text(decode_text(data)))]
    else:
        sections = [Section(text=_normalize(decode_text(data)))]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise DocumentError("no text found in the document")
    return sections


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("the PDF is encrypted with a password")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = _normalize(page.extract_text() or "")
            if text:
                sections.append(Section(text=text, page=number))
    except DocumentError:
        raise
    except LimitReachedError:
        raise DocumentError(
            "the PDF expands past the decompression limit (a decompression bomb?)"
        ) from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"unreadable PDF: {exc}") from None
    if not sections:
        raise DocumentError("the PDF has no text layer (a scan? OCR it first)")
    return sections


def _parse_jsonl(text: str) -> list[Section]:
    sections = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"line {number}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DocumentError(f"line {number}: JSON nested too deeply") from None
        if not isinstance(record, dict):
            raise DocumentError(f"line {number}: each line must be a JSON object")
        body = record.get("text")
        if not isinstance(body, str):
            raise DocumentError(f"line {number}: 'text' must be a string")
        raw_id = record.get("id", record.get("_id", number))
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
            raise DocumentError(f"line {number}: 'id' must be a string or an integer")
        record_id = str(raw_id)
        if record_id in seen:
            raise DocumentError(f"line {number}: duplicate record id {record_id!r}")
        seen.add(record_id)
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise DocumentError(f"line {number}: 'title' must be a string")
        metadata: Any = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise DocumentError(f"line {number}: 'metadata' must be an object")
        body = _normalize(body)
        if not body:
            continue
        # The title leads the text so both engines see it in the record's first chunk.
        full = f"{title.strip()}\n\n{body}" if title.strip() else body
        sections.append(
            Section(text=full, title=title.strip(), record_id=record_id, metadata=metadata)
        )
    return sections


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
    _BLOCK = {
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "hr",
        "dd",
        "dt",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


def _parse_html(text: str) -> tuple[str, str]:
    extractor = _TextExtractor()
    try:
        extractor.feed(text)
        extractor.close()
    except AssertionError as exc:  # html.parser signals hopeless markup this way
        raise DocumentError(f"unreadable HTML: {exc}") from None
    title = " ".join("".join(extractor.title_parts).split())
    return title, _normalize("".join(extractor.parts))


_MD_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^```[^\n]*$", re.M), ""),  # fences (the code inside stays)
    (re.compile(r"!\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]\n]{1,500})\]\([^)\n]{0,2000}\)"), r"\1"),  # links -> their text
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*", re.M), ""),  # heading markers
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.M), ""),  # quotes
    (re.compile(r"(\*\*|__)([^\n]{1,500}?)\1"), r"\2"),  # bold
    # emphasis: a marker, up to 200 characters of one line, the same marker
    (re.compile(r"(?<![\w*])([*_])(?!\s)([^\n]{1,200}?)(?<!\s)\1(?![\w*])"), r"\2"),
    (re.compile(r"`([^`\n]{1,1000})`"), r"\1"),  # inline code
    (re.compile(r"^[ \t]{0,16}(?:[-*_][ \t]{0,16}){3,64}$", re.M), ""),  # rules
    (re.compile(r"<[^<>\n]{1,500}>"), ""),  # inline HTML tags
]


def _markdown_to_text(text: str) -> str:
    for pattern, replacement in _MD_RULES:
        text = pattern.sub(replacement, text)
    return _normalize(text)
