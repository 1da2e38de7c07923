"""Office Open XML (DOCX, PPTX, XLSX/XLSM), OpenDocument (ODT, ODP, ODS), EPUB and legacy
Office (XLS; DOC and PPT are refused by name) files, read into structured sections.

Every one of these is a zip (or an OLE container) of XML: an archive is checked before
any reader opens it (entries, declared sizes, ratio: zip bombs fail fast), and XML is read
with entities left unresolved and no network (XXE, billion laughs)."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from ingestion.pipeline.structure import SectionBuilder, normalize
from ingestion.pipeline.text import decode_text
from ingestion.pipeline.web import html_sections
from ragstudio.core.types import DocumentError, Section

MAX_ENTRIES = 10_000
MAX_UNZIPPED = 512 * 1024 * 1024  # bytes, all entries together
MAX_RATIO = 200  # uncompressed / compressed, per entry bigger than 1 MB
MAX_CELLS = 2_000_000  # a spreadsheet's cells read, all sheets together

DOCX = "docx"
PPTX = "pptx"
XLSX = "xlsx"
ODT = "odt"
ODP = "odp"
ODS = "ods"
EPUB = "epub"
XLS = "xls"

_ODF_TYPES = {
    "application/vnd.oasis.opendocument.text": ODT,
    "application/vnd.oasis.opendocument.presentation": ODP,
    "application/vnd.oasis.opendocument.spreadsheet": ODS,
}


def open_zip(data: bytes) -> zipfile.ZipFile:
    """The archive, once its declared sizes are sane. Reading an entry never yields more
    than its declared size (zipfile stops there and checks the CRC), so checking those
    bounds what any reader can inflate."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DocumentError(f"damaged zip container: {exc}") from None
    if len(infos) > MAX_ENTRIES:
        raise DocumentError(
            f"the archive holds {len(infos):,} entries (the limit is {MAX_ENTRIES:,})"
        )
    total = sum(i.file_size for i in infos)
    if total > MAX_UNZIPPED:
        raise DocumentError(
            f"the file expands to {total:,} bytes (the limit is {MAX_UNZIPPED:,}): a zip bomb?"
        )
    for info in infos:
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DocumentError(
                f"{info.filename} expands {info.file_size // max(info.compress_size, 1):,}-fold: "
                "a zip bomb?"
            )
        if info.flag_bits & 0x1:
            raise DocumentError("encrypted zip archive: a password is needed")
    return archive


def zip_format(archive: zipfile.ZipFile) -> str:
    names = set(archive.namelist())
    if "word/document.xml" in names:
        return DOCX
    if "ppt/presentation.xml" in names:
        return PPTX
    if "xl/workbook.xml" in names:
        return XLSX
    if "mimetype" in names:
        mimetype = archive.read("mimetype")[:200].decode("ascii", "replace").strip()
        if mimetype in _ODF_TYPES:
            return _ODF_TYPES[mimetype]
        if mimetype == "application/epub+zip":
            return EPUB
        if mimetype.startswith("application/vnd.oasis.opendocument."):
            kind = mimetype.rsplit(".", 1)[-1]
            raise DocumentError(f"unsupported file type: OpenDocument {kind}")
    if "content.xml" in names and "META-INF/manifest.xml" in names:
        return ODT
    raise DocumentError(
        "unsupported file type: ZIP archive (not an Office, OpenDocument or EPUB file)"
    )


def read_zip_document(data: bytes) -> tuple[str, list[Section]]:
    archive = open_zip(data)
    fmt = zip_format(archive)
    reader = {
        DOCX: _docx,
        PPTX: _pptx,
        XLSX: _xlsx,
        ODT: _odf,
        ODP: _odf,
        ODS: _odf,
        EPUB: _epub,
    }[fmt]
    from defusedxml import DefusedXmlException
    from lxml import etree

    try:
        return fmt, reader(data, archive)
    except (etree.XMLSyntaxError, DefusedXmlException) as exc:
        reason = str(exc).split(", line")[0][:200]
        if "entit" in reason.lower() or isinstance(exc, DefusedXmlException):
            raise DocumentError(
                f"hostile XML inside the file: {reason} (entity tricks are not read)"
            ) from None
        raise DocumentError(f"damaged XML inside the file: {reason}") from None
    except zipfile.BadZipFile as exc:
        raise DocumentError(f"damaged zip container: {exc}") from None


def _xml(data: bytes) -> Any:
    from lxml import etree

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False
    )
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"damaged XML inside the file: {exc}") from None


# DOCX -------------------------------------------------------------------------------------

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_NS = {
    "w": _W,
    "m": "http://schemas.openxmlformats.org/officeDocument/2006/math",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
}


_MATH = (f"{{{_NS['m']}}}oMath", f"{{{_NS['m']}}}oMathPara")
_NEEDS_PROPERTIES = ("acc", "bar", "d", "f", "groupChr")


def _latex(math: Any) -> str:
    """An equation as LaTeX (``$...$``; ``$$...$$`` on a line of its own), or its plain
    characters where the converter cannot read it (it refuses some operators)."""
    from dwml.omml import oMath2Latex

    formulas = [math] if math.tag == _MATH[0] else math.findall(_MATH[0])
    m = _NS["m"]
    for tag in _NEEDS_PROPERTIES:  # the converter fails on a missing (optional) one
        for node in math.iter(f"{{{m}}}{tag}"):
            if node.find(f"{{{m}}}{tag}Pr") is None:
                node.insert(0, node.makeelement(f"{{{m}}}{tag}Pr"))
    try:
        latex = " ".join(str(oMath2Latex(f)) for f in formulas).strip()
    except Exception:  # its errors are not typed (NotSupport, TypeError, ...)
        latex = ""
    if not latex:
        return "".join(t.text or "" for t in math.iter(f"{{{_NS['m']}}}t"))
    fence = "$$" if math.tag == _MATH[1] else "$"
    return f" {fence}{latex}{fence} "


def _docx_text(element: Any) -> str:
    """A paragraph's text, with its text boxes and equations (as LaTeX); a text box's
    fallback copy (the same words for old readers) is skipped."""
    parts: list[str] = []
    fallback, t, breaks = f"{{{_NS['mc']}}}Fallback", f"{{{_W}}}t", (f"{{{_W}}}tab", f"{{{_W}}}br")
    stack = [iter(element)]
    while stack:  # iterative: a deep document cannot exhaust the recursion limit
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
        elif node.tag in _MATH:
            parts.append(_latex(node))
        elif node.tag == t:
            parts.append(node.text or "")
        elif node.tag in breaks:
            parts.append(" ")
        elif node.tag != fallback:
            stack.append(iter(node))
    return "".join(parts)


def _heading_level(style_name: str) -> int | None:
    name = style_name.lower()
    if name == "title":
        return 0
    if name.startswith("heading "):
        try:
            return int(name.split()[1])
        except (IndexError, ValueError):
            return None
    return None


def _docx(data: bytes, archive: zipfile.ZipFile) -> list[Section]:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DocumentError(f"damaged Word document: {exc}") from None
    builder = SectionBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            builder.table([[c.text for c in row.cells] for row in block.rows])
            continue
        text = _docx_text(block._p)
        try:
            style = block.style.name if block.style is not None else ""
        except (KeyError, ValueError):
            style = ""
        level = _heading_level(style or "")
        if level is not None and text.strip():
            builder.heading(level, text)
        else:
            builder.text(text)
    return builder.done()


# PPTX -------------------------------------------------------------------------------------


def _shape_blocks(shape: Any, builder: SectionBuilder) -> None:
    if shape.shape_type == 6 and hasattr(shape, "shapes"):  # a group
        for inner in shape.shapes:
            _shape_blocks(inner, builder)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        builder.table(_pptx_table(shape.table))
        return
    if getattr(shape, "has_chart", False) and shape.has_chart:
        _chart_table(shape.chart, builder)
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        builder.text(_numbered_text(shape.text_frame))


_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
_ROMAN = [(1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
          (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")]  # fmt: skip


def _list_marker(scheme: str, n: int) -> str:
    """The number PowerPoint shows for the ``n``th paragraph of an automatic numbering
    scheme ("arabicPeriod": "3.", "alphaLcParenR": "c)", "romanUcPeriod": "III.")."""
    if scheme.startswith("alpha"):
        value = ""
        while n > 0:
            n, rest = divmod(n - 1, 26)
            value = chr(ord("a") + rest) + value
    elif scheme.startswith("roman"):
        value, left = "", n
        for amount, letters in _ROMAN:
            count, left = divmod(left, amount)
            value += letters * count
    else:
        value = str(n)
    if "Uc" in scheme:
        value = value.upper()
    if scheme.endswith("ParenBoth"):
        return f"({value})"
    if scheme.endswith("ParenR"):
        return f"{value})"
    if scheme.endswith("Period"):
        return f"{value}."
    return value


def _numbered_text(frame: Any) -> str:
    """A text frame's paragraphs, each automatically numbered one with the number it shows
    (a numbered list's "1." is part of what a slide says). Numbering counts per level
    and starts again after a paragraph of that level that is not numbered the same way."""
    lines = []
    counters: dict[int, tuple[str, int]] = {}
    for paragraph in frame.paragraphs:
        text = paragraph.text
        level = paragraph.level
        props = paragraph._p.pPr
        auto = props.find(f"{{{_A}}}buAutoNum") if props is not None else None
        for deeper in [lv for lv in counters if lv > level]:
            del counters[deeper]
        if auto is None or not text.strip():
            if text.strip():
                counters.pop(level, None)
            lines.append(text)
            continue
        scheme = auto.get("type", "arabicPeriod")
        previous = counters.get(level)
        if previous is not None and previous[0] == scheme:
            number = previous[1] + 1
        else:
            try:
                number = max(1, int(auto.get("startAt", "1")))
            except ValueError:
                number = 1
        counters[level] = (scheme, number)
        lines.append(f"{_list_marker(scheme, number)} {text}")
    return "\n".join(lines)


_P = "http://schemas.openxmlformats.org/presentationml/2006/main"
_COMMENTS = "/comments"
_AUTHORS = "/commentAuthors"


def _related_blobs(part: Any, suffix: str) -> list[bytes]:
    return [
        rel.target_part.blob
        for rel in part.rels.values()
        if not rel.is_external and rel.reltype.endswith(suffix)
    ]


def _pptx_authors(deck: Any) -> dict[str, str]:
    authors = {}
    for blob in _related_blobs(deck.part, _AUTHORS):
        for author in _xml(blob).iter(f"{{{_P}}}cmAuthor"):
            authors[author.get("id", "")] = author.get("name", "")
    return authors


def _pptx_comments(slide: Any, authors: dict[str, str]) -> list[str]:
    """A slide's review comments, each as "author (time): text"."""
    lines = []
    for blob in _related_blobs(slide.part, _COMMENTS):
        for comment in _xml(blob).iter(f"{{{_P}}}cm"):
            text = " ".join(t.text or "" for t in comment.iter(f"{{{_P}}}text"))
            author = authors.get(comment.get("authorId", ""), "")
            when = comment.get("dt", "")
            lines.append(f"{author} ({when}): {text}" if author else text)
    return lines


def _pptx_table(table: Any) -> list[list[str]]:
    """A slide's table, a merged cell's text repeated over the cells it spans (as Word
    tables read)."""
    rows = [[cell.text for cell in row.cells] for row in table.rows]
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            if cell.is_merge_origin:
                for dr in range(cell.span_height):
                    for dc in range(cell.span_width):
                        if r + dr < len(rows) and c + dc < len(rows[r + dr]):
                            rows[r + dr][c + dc] = cell.text
    return rows


def _chart_table(chart: Any, builder: SectionBuilder) -> None:
    try:
        plot = chart.plots[0]
        categories = [str(c) for c in plot.categories]
        series = list(plot.series)
    except (IndexError, KeyError, ValueError, AttributeError):
        return
    if chart.has_title and chart.chart_title.has_text_frame:
        builder.text(chart.chart_title.text_frame.text)
    rows = [["", *[s.name for s in series]]]
    for i, category in enumerate(categories):
        rows.append([category, *[(s.values[i] if i < len(s.values) else "") for s in series]])
    builder.table(rows)


def _pptx(data: bytes, archive: zipfile.ZipFile) -> list[Section]:
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DocumentError(f"damaged PowerPoint file: {exc}") from None
    sections: list[Section] = []
    authors = _pptx_authors(deck)
    for number, slide in enumerate(deck.slides, start=1):
        builder = SectionBuilder({"slide": number})
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text if title_shape is not None else ""
        builder.heading(1, title.strip() or f"Slide {number}")
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            _shape_blocks(shape, builder)
        comments = _pptx_comments(slide, authors)
        if comments:
            builder.heading(2, "Comments")
            builder.text("\n".join(comments))
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            if frame is not None and frame.text.strip():
                builder.heading(2, "Notes")
                builder.text(frame.text)
        sections.extend(builder.done())
    return sections


# Spreadsheets ------------------------------------------------------------------------------


def _filled(value: Any) -> bool:
    return value is not None and bool(str(value).strip())


def _blocks(rows: Iterator[tuple[int, Sequence[Any]]]) -> list[list[tuple[int, list[Any]]]]:
    """A sheet's tables: the regions of its filled cells that touch (diagonals count),
    each as its rows (sheet row number, the region's columns), top to bottom, left to
    right. Tables side by side or one under another, with empty cells between, come
    apart; a table's own empty cells stay in it."""
    cells: dict[tuple[int, int], Any] = {}
    for number, row in rows:
        for column, value in enumerate(row):
            if _filled(value):
                cells[(number, column)] = value
    seen: set[tuple[int, int]] = set()
    boxes: list[list[int]] = []  # top, left, bottom, right
    for start in sorted(cells):
        if start in seen:
            continue
        seen.add(start)
        stack = [start]
        top, left, bottom, right = start[0], start[1], start[0], start[1]
        while stack:
            r, c = stack.pop()
            top, bottom, left, right = min(top, r), max(bottom, r), min(left, c), max(right, c)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    near = (r + dr, c + dc)
                    if near in cells and near not in seen:
                        seen.add(near)
                        stack.append(near)
        boxes.append([top, left, bottom, right])
    merged = True
    while merged:  # regions whose boxes overlap are one table
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    tables = []
    for top, left, bottom, right in sorted(boxes):
        block = []
        for number in range(top, bottom + 1):
            values = [cells.get((number, c)) for c in range(left, right + 1)]
            if any(_filled(v) for v in values):
                block.append((number, values))
        tables.append(block)
    return tables


def _sheet(builder: SectionBuilder, name: str, rows: Iterator[tuple[int, Sequence[Any]]]) -> None:
    blocks = _blocks(rows)
    if not blocks:  # an empty sheet (or a chart sheet: its chart is read with the charts)
        return
    builder.flush()  # the previous sheet's text keeps its own sheet
    builder.metadata["sheet"] = name
    builder.heading(1, name)
    for block in blocks:
        filled = [sum(1 for v in row if _filled(v)) for _, row in block]
        # A title or note above a table: rows with one cell before the first wide one.
        lead = 0
        while lead < len(block) - 1 and filled[lead] < 2:
            lead += 1
        for _, row in block[:lead]:
            builder.text(" ".join(str(v) for v in row if v is not None))
        table = block[lead:]
        builder.table([r for _, r in table], numbers=[n for n, _ in table])


def _counted(
    rows: Iterator[tuple[int, Sequence[Any]]], budget: list[int]
) -> Iterator[tuple[int, Sequence[Any]]]:
    for number, row in rows:
        budget[0] -= len(row)
        if budget[0] < 0:
            raise DocumentError(f"the spreadsheet has more than {MAX_CELLS:,} cells")
        yield number, row


def _xlsx(data: bytes, archive: zipfile.ZipFile) -> list[Section]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise DocumentError(f"damaged Excel workbook: {exc}") from None
    builder = SectionBuilder()
    budget = [MAX_CELLS]
    try:
        for sheet in book.worksheets:
            # The dimension a file declares can be smaller than its data (openpyxl's
            # read-only mode would stop there): read every row there is.
            sheet.reset_dimensions()
            first = 1
            rows = enumerate(sheet.iter_rows(values_only=True), start=first)
            _sheet(builder, sheet.title, _counted(rows, budget))
    finally:
        book.close()
    _charts(builder, archive, "xl/charts/")
    return builder.done()


_C = "http://schemas.openxmlformats.org/drawingml/2006/chart"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
MAX_CHARTS = 100


def _points(node: Any) -> list[str]:
    if node is None:
        return []
    points = sorted(
        ((int(pt.get("idx", "0") or 0), pt.findtext(f"{{{_C}}}v") or "")
         for pt in node.iter(f"{{{_C}}}pt")),
        key=lambda item: item[0],
    )  # fmt: skip
    return [value for _, value in points]


def _first(node: Any, *names: str) -> Any:
    for name in names:
        found = node.find(f"{{{_C}}}{name}")
        if found is not None:
            return found
    return None


def _charts(builder: SectionBuilder, archive: zipfile.ZipFile, folder: str) -> None:
    """Each chart's data as its file caches it (title, series, categories): a table under
    "Chart: title", so a chart's numbers can be found like a sheet's."""
    names = sorted(n for n in archive.namelist() if n.startswith(folder) and n.endswith(".xml"))[
        :MAX_CHARTS
    ]
    for name in names:
        root = _xml(archive.read(name))
        title_node = root.find(f".//{{{_C}}}title")
        title = (
            " ".join(t.text or "" for t in title_node.iter(f"{{{_A}}}t"))
            if title_node is not None
            else ""
        )
        series = list(root.iter(f"{{{_C}}}ser"))
        if not series:
            continue
        names_row = [" ".join(_points(s.find(f"{{{_C}}}tx"))) for s in series]
        values = [_points(_first(s, "val", "yVal")) for s in series]
        categories = _points(_first(series[0], "cat", "xVal"))
        length = max([len(categories), *(len(v) for v in values)])
        rows = [["", *names_row]]
        for i in range(length):
            label = categories[i] if i < len(categories) else str(i + 1)
            rows.append([label, *[(v[i] if i < len(v) else "") for v in values]])
        builder.flush()
        builder.metadata.pop("sheet", None)
        builder.heading(1, f"Chart: {title.strip()}" if title.strip() else "Chart")
        builder.table(rows)


def read_xls(data: bytes) -> list[Section]:
    import xlrd

    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
    except (xlrd.XLRDError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise DocumentError(f"damaged Excel 97-2003 workbook: {exc}") from None
    builder = SectionBuilder()
    budget = [MAX_CELLS]
    for index in range(book.nsheets):
        sheet = book.sheet_by_index(index)
        rows = ((r + 1, sheet.row_values(r)) for r in range(sheet.nrows))
        _sheet(builder, sheet.name, _counted(rows, budget))
        book.unload_sheet(index)
    return builder.done()


# OpenDocument ------------------------------------------------------------------------------

_ODF = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
}
MAX_REPEAT = 1000  # a repeated row or cell is read at most this often
# Drawing shapes that hold text on a slide (frames hold text boxes and tables).
_SHAPE_NAMES = ("frame", "custom-shape", "rect", "ellipse", "g")


def _q(prefix: str, name: str) -> str:
    return f"{{{_ODF[prefix]}}}{name}"


_SHAPES = {_q("draw", name) for name in _SHAPE_NAMES}


def _odf_text(element: Any) -> str:
    parts: list[str] = []

    def walk(node: Any) -> None:
        if node.tag == _q("text", "s"):
            parts.append(" " * min(int(node.get(_q("text", "c"), "1") or 1), 8))
        elif node.tag in (_q("text", "tab"), _q("text", "line-break")):
            parts.append(" ")
        elif node.tag == _q("text", "note"):
            return  # footnotes: not inline text
        if node.text and node.tag != _q("text", "note"):
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(element)
    return "".join(parts)


def _int(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def _odf_table(table: Any, budget: list[int]) -> tuple[list[list[str]], list[int]]:
    rows: list[list[str]] = []
    numbers: list[int] = []
    number = 0
    # A merged cell's text is repeated over the cells it covers (as Word tables read):
    # across its row (columns left) and down the rows below (column -> text, rows left).
    below: dict[int, tuple[str, int]] = {}
    for row in table.iter(_q("table", "table-row")):
        cells: list[str] = []
        across: tuple[str, int] = ("", 0)
        for cell in row:
            if cell.tag not in (_q("table", "table-cell"), _q("table", "covered-table-cell")):
                continue
            text = " ".join(_odf_text(p) for p in cell.iter(_q("text", "p")))
            column = len(cells)
            if cell.tag == _q("table", "covered-table-cell") and not text.strip():
                if across[1] > 0:
                    text, across = across[0], (across[0], across[1] - 1)
                elif below.get(column, ("", 0))[1] > 0:
                    text = below[column][0]
            else:
                wide = min(_int(cell.get(_q("table", "number-columns-spanned"))), MAX_REPEAT)
                tall = min(_int(cell.get(_q("table", "number-rows-spanned"))), MAX_REPEAT)
                across = (text, wide - 1)
                for offset in range(wide if tall > 1 else 0):
                    below[column + offset] = (text, tall)
            repeat = int(cell.get(_q("table", "number-columns-repeated"), "1") or 1)
            # Trailing empty cells repeated to the sheet's edge are not read one by one.
            cells.extend([text] * (min(repeat, MAX_REPEAT) if text.strip() else min(repeat, 64)))
        below = {c: (t, left - 1) for c, (t, left) in below.items() if left > 1}
        repeat = int(row.get(_q("table", "number-rows-repeated"), "1") or 1)
        filled = any(c.strip() for c in cells)
        for _ in range(min(repeat, MAX_REPEAT) if filled else 1):
            number += 1
            budget[0] -= len(cells)
            if budget[0] < 0:
                raise DocumentError(f"the spreadsheet has more than {MAX_CELLS:,} cells")
            if filled:
                rows.append(cells)
                numbers.append(number)
        if not filled:
            number += repeat - 1
    return rows, numbers


def _odf_blocks(node: Any, builder: SectionBuilder, budget: list[int]) -> None:
    for child in node:
        tag = child.tag
        if tag == _q("text", "h"):
            level = int(child.get(_q("text", "outline-level"), "1") or 1)
            builder.heading(level, _odf_text(child))
        elif tag == _q("text", "p"):
            builder.text(_odf_text(child))
        elif tag == _q("table", "table"):
            rows, numbers = _odf_table(child, budget)
            builder.table(rows, numbers=numbers)
        elif tag in (
            _q("text", "list"),
            _q("text", "list-item"),
            _q("text", "section"),
            _q("text", "list-header"),
            _q("draw", "text-box"),
            *_SHAPES,
        ):
            _odf_blocks(child, builder, budget)


def _odf(data: bytes, archive: zipfile.ZipFile) -> list[Section]:
    try:
        content = archive.read("content.xml")
    except KeyError:
        raise DocumentError("damaged OpenDocument file: content.xml is missing") from None
    root = _xml(content)
    body = root.find(_q("office", "body"))
    if body is None:
        raise DocumentError("damaged OpenDocument file: no document body")
    budget = [MAX_CELLS]
    text = body.find(_q("office", "text"))
    if text is not None:
        builder = SectionBuilder()
        _odf_blocks(text, builder, budget)
        return builder.done()
    sheet_root = body.find(_q("office", "spreadsheet"))
    if sheet_root is not None:
        builder = SectionBuilder()
        for table in sheet_root.iter(_q("table", "table")):
            name = table.get(_q("table", "name"), "") or "Sheet"
            rows, numbers = _odf_table(table, budget)
            _sheet(builder, name, iter(zip(numbers, rows, strict=True)))
        return builder.done()
    deck = body.find(_q("office", "presentation"))
    if deck is None:
        raise DocumentError("unsupported OpenDocument body")
    sections: list[Section] = []
    for number, page in enumerate(deck.iter(_q("draw", "page")), start=1):
        builder = SectionBuilder({"slide": number})
        title = ""
        for frame in page.iter(_q("draw", "frame")):
            if frame.get(_q("presentation", "class")) == "title":
                title = normalize(_odf_text(frame))
                break
        builder.heading(1, title or page.get(_q("draw", "name"), "") or f"Slide {number}")
        for frame in page:
            if frame.get(_q("presentation", "class")) == "title" or frame.tag not in _SHAPES:
                continue
            _odf_blocks(frame, builder, budget)
        notes = page.find(_q("presentation", "notes"))
        if notes is not None:
            note_builder = SectionBuilder()
            for frame in notes.iter(_q("draw", "frame")):
                if frame.get(_q("presentation", "class")) == "notes":
                    _odf_blocks(frame, note_builder, budget)
            note_text = "\n".join(s.text for s in note_builder.done())
            if note_text.strip():
                builder.heading(2, "Notes")
                builder.text(note_text)
        sections.extend(builder.done())
    return sections


# EPUB --------------------------------------------------------------------------------------

_OPF = "http://www.idpf.org/2007/opf"
_CONTAINER = "urn:oasis:names:tc:opendocument:xmlns:container"


def _epub(data: bytes, archive: zipfile.ZipFile) -> list[Section]:
    try:
        container = _xml(archive.read("META-INF/container.xml"))
        rootfile = container.find(f".//{{{_CONTAINER}}}rootfile")
        opf_path = rootfile.get("full-path") if rootfile is not None else None
        if not opf_path:
            raise DocumentError("damaged EPUB: no package file")
        opf = _xml(archive.read(opf_path))
    except KeyError as exc:
        raise DocumentError(f"damaged EPUB: {exc} is missing") from None
    base = posixpath.dirname(opf_path)
    manifest = {
        item.get("id"): item
        for item in opf.iter(f"{{{_OPF}}}item")
        if item.get("id") and item.get("href")
    }
    sections: list[Section] = []
    for chapter, ref in enumerate(opf.iter(f"{{{_OPF}}}itemref"), start=1):
        item = manifest.get(ref.get("idref"))
        if item is None or "html" not in (item.get("media-type") or ""):
            continue
        path = posixpath.normpath(posixpath.join(base, item.get("href").split("#")[0]))
        try:
            page = archive.read(path)
        except KeyError:
            continue
        for section in html_sections(decode_text(page), main_content=False):
            section.metadata.setdefault("chapter", chapter)
            sections.append(section)
    return sections


# Word 97-2003 (.doc) ---------------------------------------------------------------------

_CP1252_SPECIALS = {0x1E: "-", 0x1F: "", 0x07: "\t", 0x0B: "\n", 0x0C: "\n", 0x0D: "\n"}


def read_doc(data: bytes) -> list[Section]:
    """The main text of a Word 97-2003 document, through its piece table (the text of each
    piece, 8-bit or UTF-16, in order); field codes are dropped and their results kept.
    No formatting survives in this format's text, so no headings: one section."""
    import olefile

    try:
        with olefile.OleFileIO(data) as ole:
            word = ole.openstream("WordDocument").read()
            if len(word) < 0x01AA:
                raise DocumentError("damaged Word 97-2003 document: its header is cut short")
            flags = int.from_bytes(word[0x0A:0x0C], "little")
            if flags & 0x0100:
                raise DocumentError("encrypted Word 97-2003 document: a password is needed")
            table_name = "1Table" if flags & 0x0200 else "0Table"
            if not ole.exists(table_name):
                raise DocumentError(f"damaged Word 97-2003 document: no {table_name} stream")
            table = ole.openstream(table_name).read()
    except (OSError, ValueError, IndexError) as exc:
        raise DocumentError(f"damaged Word 97-2003 document: {exc}") from None
    return [Section(text=normalize(doc_plain(doc_text(word, table))))]


def doc_text(word: bytes, table: bytes) -> str:
    """The main document's characters, from the WordDocument and table streams."""
    text_chars = int.from_bytes(word[0x4C:0x50], "little")
    fc_clx = int.from_bytes(word[0x01A2:0x01A6], "little")
    lcb_clx = int.from_bytes(word[0x01A6:0x01AA], "little")
    clx = table[fc_clx : fc_clx + lcb_clx]
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: property modifiers, skipped
        pos += 3 + int.from_bytes(clx[pos + 1 : pos + 3], "little")
    if pos + 5 > len(clx) or clx[pos] != 0x02:
        raise DocumentError("damaged Word 97-2003 document: no piece table")
    size = int.from_bytes(clx[pos + 1 : pos + 5], "little")
    plc = clx[pos + 5 : pos + 5 + size]
    pieces = (len(plc) - 4) // 12
    cps = [int.from_bytes(plc[4 * i : 4 * i + 4], "little") for i in range(pieces + 1)]
    parts: list[str] = []
    for i in range(pieces):
        start, end = cps[i], min(cps[i + 1], text_chars)
        if end <= start:
            continue
        pcd = plc[4 * (pieces + 1) + 8 * i : 4 * (pieces + 1) + 8 * i + 8]
        fc = int.from_bytes(pcd[2:6], "little")
        if fc & 0x40000000:  # 8-bit text at half the offset
            offset = (fc & 0x3FFFFFFF) // 2
            parts.append(word[offset : offset + end - start].decode("cp1252", "replace"))
        else:
            raw = word[fc : fc + 2 * (end - start)]
            parts.append(raw.decode("utf-16-le", "replace"))
    return "".join(parts)


def doc_plain(text: str) -> str:
    """Field codes (between the marks 0x13 and 0x14) dropped, their results kept; Word's
    control characters as spaces and line breaks."""
    out: list[str] = []
    depth_code: list[bool] = []  # per open field: still in its code part
    for ch in text:
        code = ord(ch)
        if code == 0x13:
            depth_code.append(True)
        elif code == 0x14:
            if depth_code:
                depth_code[-1] = False
        elif code == 0x15:
            if depth_code:
                depth_code.pop()
        elif depth_code and depth_code[-1]:
            continue
        elif code in _CP1252_SPECIALS:
            out.append(_CP1252_SPECIALS[code])
        elif code >= 0x20 or ch in "\t\n":
            out.append(ch)
    return "".join(out)
