"""Turn uploaded bytes into sections. Formats are detected by content first; the file name
only breaks ties between formats that look alike (Markdown, AsciiDoc, reStructuredText,
CSV and plain text). Containers (zip, OLE) are told apart by what they hold."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import PurePath
from typing import IO, Any

from ingestion.pipeline import mail, ocr, office
from ingestion.pipeline.structure import SectionBuilder, normalize, outline_sections
from ingestion.pipeline.text import decode_text, markdown_to_text
from ingestion.pipeline.web import decode_html, html_sections
from ragstudio.core.types import DocumentError, Section

TEXT = "text"
MARKDOWN = "markdown"
HTML = "html"
PDF = "pdf"
JSONL = "jsonl"
CSV = "csv"
TSV = "tsv"
ASCIIDOC = "asciidoc"
RST = "rst"
RTF = "rtf"
EML = "eml"
MSG = "msg"
DOC = "doc"
IMAGE_PNG = "png"
IMAGE_JPEG = "jpeg"
IMAGE_TIFF = "tiff"
IMAGE_WEBP = "webp"
IMAGES = (IMAGE_PNG, IMAGE_JPEG, IMAGE_TIFF, IMAGE_WEBP)
FORMATS = (
    TEXT, MARKDOWN, HTML, PDF, JSONL, CSV, TSV, ASCIIDOC, RST, RTF, EML, MSG, DOC,
    office.DOCX, office.PPTX, office.XLSX, office.ODT, office.ODP, office.ODS, office.EPUB,
    office.XLS, *IMAGES,
)  # fmt: skip

CONTENT_TYPES = {
    TEXT: "text/plain",
    MARKDOWN: "text/markdown",
    HTML: "text/html",
    PDF: "application/pdf",
    JSONL: "application/jsonl",
    CSV: "text/csv",
    TSV: "text/tab-separated-values",
    ASCIIDOC: "text/asciidoc",
    RST: "text/x-rst",
    RTF: "application/rtf",
    EML: "message/rfc822",
    MSG: "application/vnd.ms-outlook",
    DOC: "application/msword",
    office.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    office.PPTX: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    office.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    office.ODT: "application/vnd.oasis.opendocument.text",
    office.ODP: "application/vnd.oasis.opendocument.presentation",
    office.ODS: "application/vnd.oasis.opendocument.spreadsheet",
    office.EPUB: "application/epub+zip",
    office.XLS: "application/vnd.ms-excel",
    IMAGE_PNG: "image/png",
    IMAGE_JPEG: "image/jpeg",
    IMAGE_TIFF: "image/tiff",
    IMAGE_WEBP: "image/webp",
}

_IMAGE_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", IMAGE_PNG),
    (b"\xff\xd8\xff", IMAGE_JPEG),
    (b"II*\x00", IMAGE_TIFF),
    (b"MM\x00*", IMAGE_TIFF),
]
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# Signatures of common binary formats we do not read, so the error names what was uploaded.
_MAGIC: list[tuple[bytes, str]] = [
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\x7fELF", "executable"),
    (b"MZ", "Windows executable"),
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
_ASCIIDOC_EXTENSIONS = {".adoc", ".asciidoc", ".asc"}
_RST_EXTENSIONS = {".rst", ".rest"}
_CSV_EXTENSIONS = {".csv": CSV, ".tsv": TSV, ".tab": TSV}


def _sniff_binary(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    head = data[:8192]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary data"
    return None


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


def _container_format(data: bytes, file: IO[bytes] | None) -> str:
    """The format inside a zip or OLE container, from its directory (read from ``file``
    when the upload's head is all ``data`` holds)."""
    source: IO[bytes] = file if file is not None else io.BytesIO(data)
    source.seek(0)
    if data.startswith(_ZIP):
        import zipfile

        try:
            with zipfile.ZipFile(source) as archive:
                return office.zip_format(archive)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DocumentError(f"damaged zip container: {exc}") from None
    return _ole_format(source)


def _ole_format(source: IO[bytes]) -> str:
    import olefile

    try:
        with olefile.OleFileIO(source) as ole:
            streams = {"/".join(entry) for entry in ole.listdir(streams=True, storages=True)}
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise DocumentError(f"damaged Office 97-2003 file: {exc}") from None
    if "EncryptedPackage" in streams or "EncryptionInfo" in streams:
        raise DocumentError("encrypted Office document: a password is needed")
    if any(name.startswith("__substg1.0_") for name in streams):
        return MSG
    if "Workbook" in streams or "Book" in streams:
        return office.XLS
    if "WordDocument" in streams:
        return DOC
    if "PowerPoint Document" in streams:
        raise DocumentError(
            "unsupported file type: legacy PowerPoint 97-2003 presentation (.ppt); save it as .pptx"
        )
    raise DocumentError("unsupported file type: an OLE container that is no Office document")


def _sniff_delimiter(text: str, suffix: str) -> str:
    """The delimiter of a delimited text file: a sniffed one that splits the first lines
    into the same number (2 or more) of fields."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if len(lines) < 2:
        raise DocumentError("not a table: a CSV file needs a header row and a data row")
    candidates = "\t" if suffix in (".tsv", ".tab") else ",;\t|"
    best = ""
    for delimiter in candidates:
        widths = {len(row) for row in csv.reader(lines[:-1] or lines, delimiter=delimiter)}
        if len(widths) == 1 and widths.pop() >= 2:
            best = delimiter
            break
    if not best:
        try:
            best = csv.Sniffer().sniff("\n".join(lines), delimiters=candidates).delimiter
        except csv.Error:
            raise DocumentError("not a table: no consistent delimiter in the first rows") from None
    return best


def detect_format(data: bytes, filename: str = "", *, file: IO[bytes] | None = None) -> str:
    """The format of ``data`` (a whole file, or its head with the whole in ``file``);
    raises DocumentError for empty, damaged or unsupported input, naming what it is."""
    if not data.strip():
        raise DocumentError("empty file: there is no text to index")
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith((_ZIP, _OLE)):
        return _container_format(data, file)
    for magic, fmt in _IMAGE_MAGIC:
        if data.startswith(magic):
            return fmt
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return IMAGE_WEBP
    if data.startswith(b"{\\rtf"):
        return RTF
    binary = _sniff_binary(data)
    if binary:
        raise DocumentError(f"unsupported file type: {binary}")
    suffix = PurePath(filename).suffix.lower()
    if _HTML_START.match(data[:1024]):
        return HTML
    if mail.looks_like_email(data[:SNIFF_BYTES]):
        return EML
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
    if suffix in _CSV_EXTENSIONS:
        _sniff_delimiter(text_head, suffix)
        return _CSV_EXTENSIONS[suffix]
    if suffix in _MD_EXTENSIONS:
        return MARKDOWN
    if suffix in _ASCIIDOC_EXTENSIONS:
        return ASCIIDOC
    if suffix in _RST_EXTENSIONS:
        return RST
    if suffix in _JSONL_EXTENSIONS:
        raise DocumentError("JSON Lines file whose first record has no 'text' field")
    if suffix not in {".txt", ".text", ""} and len(_MD_SIGNS.findall(text_head)) >= 3:
        return MARKDOWN
    return TEXT


def parse_document(
    data: bytes, filename: str = "", *, max_bytes: int | None = None, depth: int = 0
) -> list[Section]:
    """Sections of one uploaded file. Raises DocumentError with a message for people:
    oversized, empty, damaged, encrypted, unsupported, or no text at all. ``depth`` counts
    the containers around the file (an e-mail's attachment is read at depth 1)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DocumentError(
            f"file too large: {len(data):,} bytes (the limit is {max_bytes:,} bytes)"
        )
    fmt = detect_format(data, filename)
    sections = _READERS[fmt](data, filename, depth)
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise DocumentError("no text found in the document")
    return sections


def _attachment(data: bytes, filename: str, depth: int) -> list[Section]:
    return parse_document(data, filename, depth=depth)


def _read_text(data: bytes, filename: str, depth: int) -> list[Section]:
    return [Section(text=_normalize(decode_text(data)))]


def _read_markdown(data: bytes, filename: str, depth: int) -> list[Section]:
    return outline_sections(decode_text(data), "markdown", markdown_to_text)


def _read_outline(kind: str) -> Any:
    def read(data: bytes, filename: str, depth: int) -> list[Section]:
        return outline_sections(decode_text(data), kind)

    return read


def _read_html(data: bytes, filename: str, depth: int) -> list[Section]:
    return html_sections(decode_html(data))


def _read_delimited(data: bytes, filename: str, depth: int) -> list[Section]:
    text = decode_text(data)
    delimiter = _sniff_delimiter(text[:SNIFF_BYTES], PurePath(filename).suffix.lower())
    builder = SectionBuilder()
    rows: list[list[str]] = []
    numbers: list[int] = []
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        for row in reader:
            if len(rows) >= office.MAX_CELLS // max(len(row), 1):
                raise DocumentError(f"the table has more than {office.MAX_CELLS:,} cells")
            rows.append(row)
            numbers.append(reader.line_num)
    except csv.Error as exc:
        raise DocumentError(f"unreadable CSV: {exc}") from None
    builder.table(rows, numbers=numbers)
    return builder.done()


def _read_zip(data: bytes, filename: str, depth: int) -> list[Section]:
    return office.read_zip_document(data)[1]


def _read_xls(data: bytes, filename: str, depth: int) -> list[Section]:
    return office.read_xls(data)


def _read_doc(data: bytes, filename: str, depth: int) -> list[Section]:
    return office.read_doc(data)


def _read_eml(data: bytes, filename: str, depth: int) -> list[Section]:
    return mail.read_eml(data, _attachment, depth)


def _read_msg(data: bytes, filename: str, depth: int) -> list[Section]:
    return mail.read_msg(data, _attachment, depth)


def _read_rtf(data: bytes, filename: str, depth: int) -> list[Section]:
    return mail.read_rtf(data.decode("latin-1"))


def _image_kind(data: bytes) -> str:
    for magic, fmt in _IMAGE_MAGIC:
        if data.startswith(magic):
            return fmt
    return IMAGE_WEBP


def _read_image(data: bytes, filename: str, depth: int) -> list[Section]:
    sections = []
    kind = _image_kind(data)
    for number, png in enumerate(ocr.image_to_png(data, kind.upper()), start=1):
        text = _normalize(ocr.ocr_image(png))
        if text:
            sections.append(Section(text=text, page=number, metadata={"ocr": True}))
    if not sections:
        raise DocumentError("no text found in the image (OCR read nothing)")
    return sections


def _read_pdf(data: bytes, filename: str, depth: int) -> list[Section]:
    return _parse_pdf(data)


def _read_jsonl(data: bytes, filename: str, depth: int) -> list[Section]:
    return _parse_jsonl(decode_text(data))


_READERS: dict[str, Any] = {
    TEXT: _read_text,
    MARKDOWN: _read_markdown,
    ASCIIDOC: _read_outline("asciidoc"),
    RST: _read_outline("rst"),
    HTML: _read_html,
    PDF: _read_pdf,
    JSONL: _read_jsonl,
    CSV: _read_delimited,
    TSV: _read_delimited,
    RTF: _read_rtf,
    EML: _read_eml,
    MSG: _read_msg,
    office.DOCX: _read_zip,
    office.PPTX: _read_zip,
    office.XLSX: _read_zip,
    office.ODT: _read_zip,
    office.ODP: _read_zip,
    office.ODS: _read_zip,
    office.EPUB: _read_zip,
    office.XLS: _read_xls,
    DOC: _read_doc,
    **{fmt: _read_image for fmt in IMAGES},
}


_normalize = normalize


# A page with fewer characters than this in its text layer is read by OCR (when installed).
MIN_PAGE_CHARS = 20


def _parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF: a password is needed to read it")
        texts = [_normalize(page.extract_text() or "") for page in reader.pages]
    except DocumentError:
        raise
    except FileNotDecryptedError:
        raise DocumentError("encrypted PDF: a password is needed to read it") from None
    except LimitReachedError:
        raise DocumentError(
            "the PDF expands past the decompression limit (a decompression bomb?)"
        ) from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"damaged PDF: {exc}") from None
    except RecursionError:
        raise DocumentError("damaged PDF: its objects nest too deeply") from None
    sections = [Section(text=t, page=n) for n, t in enumerate(texts, start=1) if t]
    blank = [n for n, t in enumerate(texts, start=1) if len(t) < MIN_PAGE_CHARS]
    if blank and ocr.available():
        by_page = {s.page or 0: s for s in sections}
        for number, text in _ocr_pages(data, blank):
            if text:
                by_page[number] = Section(text=text, page=number, metadata={"ocr": True})
        sections = [by_page[n] for n in sorted(by_page)]
    if not sections:
        if not ocr.available():
            raise DocumentError(
                "the PDF has no text layer (a scan?) and OCR is not installed on this server"
            )
        raise DocumentError("the PDF has no text layer, and OCR found no text in its pages")
    return sections


def _ocr_pages(data: bytes, numbers: list[int]) -> list[tuple[int, str]]:
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        raise DocumentError(f"damaged PDF: {exc}") from None
    try:
        return [(n, _normalize(ocr.ocr_image(ocr.render_pdf_page(pdf, n - 1)))) for n in numbers]
    finally:
        pdf.close()


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
