"""Real-document formats (issue 23), on the fixtures tests/data/documents.py makes: each is
read into sections that follow its structure, tables keep their header, hostile files
fail alone and fast with the reason."""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.parse import CONTENT_TYPES, detect_format, parse_document
from ingestion.pipeline.sandbox import ParseSandbox
from ragstudio.core.types import DocumentError

DOCS = Path(__file__).resolve().parents[1] / "data" / "documents"


def read(name: str) -> bytes:
    return (DOCS / name).read_bytes()


def sections_of(name: str, filename: str | None = None):  # type: ignore[no-untyped-def]
    return parse_document(read(name), filename or name)


def test_docx_sections_follow_headings_and_its_table_keeps_the_header() -> None:
    sections = sections_of("manual.docx")
    paths = [s.metadata.get("section") for s in sections]
    assert paths == ["Installation", "Installation > Requirements", "Usage"]
    table = sections[1]
    assert table.header.endswith("Part | Year | Cost")
    assert table.text.splitlines() == ["Tripod | 2021 | 340 EUR", "Counterweight | 2022 | 95 EUR"]
    assert table.rows == (2, 3)
    # Detected by content: the name says nothing.
    assert detect_format(read("manual.docx"), "upload.bin") == "docx"


def test_docx_equations_read_as_latex_and_one_it_cannot_convert_keeps_its_characters() -> None:
    lines = "\n".join(s.text for s in sections_of("equations.docx")).splitlines()
    assert lines[0] == "A circle's area is $A=πr^{2}$ for its radius."
    assert lines[1] == "$$y=\\frac{x}{2}$$"
    # The converter refuses a limit under "argmax": its characters stay, in reading order.
    assert lines[2] == "The best: argmaxϵf(x)"


def test_pptx_slides_with_titles_and_notes() -> None:
    sections = sections_of("deck.pptx")
    assert [(s.metadata["slide"], s.metadata["section"]) for s in sections] == [
        (1, "Quarterly results"),
        (1, "Quarterly results > Notes"),
        (2, "Next steps"),
        (2, "Next steps > Notes"),
    ]
    assert "Revenue grew in every region." in sections[0].text
    assert "Mention the Lisbon office." in sections[1].text


def test_pptx_numbered_lists_keep_the_numbers_the_slide_shows() -> None:
    """A numbered list's "1." is part of what a slide says; it was dropped. Numbering
    counts per level, from startAt, and starts again after a paragraph not numbered."""
    from lxml import etree
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Steps"
    frame = slide.placeholders[1].text_frame
    lines = [
        ("Unpack the mount", 0, "arabicPeriod", None),
        ("Level the tripod", 0, "arabicPeriod", None),
        ("Check the bubble", 1, "alphaLcParenR", None),
        ("Tighten the legs", 1, "alphaLcParenR", None),
        ("Attach the head", 0, "arabicPeriod", None),
        ("A plain remark", 0, None, None),
        ("Polar alignment", 0, "romanUcPeriod", "4"),
        ("Star hopping", 0, "romanUcPeriod", None),
    ]
    for n, (text, level, scheme, start) in enumerate(lines):
        paragraph = frame.paragraphs[0] if n == 0 else frame.add_paragraph()
        paragraph.text, paragraph.level = text, level
        if scheme:
            auto = etree.SubElement(
                paragraph._p.get_or_add_pPr(),
                "{http://schemas.openxmlformats.org/drawingml/2006/main}buAutoNum",
            )
            auto.set("type", scheme)
            if start:
                auto.set("startAt", start)
    out = io.BytesIO()
    deck.save(out)
    (section,) = parse_document(out.getvalue(), "steps.pptx")
    assert section.text.splitlines()[-8:] == [
        "1. Unpack the mount",
        "2. Level the tripod",
        "a) Check the bubble",
        "b) Tighten the legs",
        "3. Attach the head",
        "A plain remark",
        "IV. Polar alignment",
        "V. Star hopping",
    ]


def test_xlsx_sheets_are_tables_whose_chunks_repeat_the_header_and_cite_rows(
    embedder,  # type: ignore[no-untyped-def]
) -> None:
    sections = sections_of("budget.xlsx")
    assert [s.metadata["sheet"] for s in sections] == ["Costs", "Staff"]
    costs = sections[0]
    assert costs.header == "Costs\nItem | 2020 | 2021" and costs.rows[0] == 2
    chunks = Chunker(embedder.tokenizer, size=40, overlap=10).chunk(1, sections)
    cost_chunks = [c for c in chunks if c.metadata["sheet"] == "Costs"]
    assert len(cost_chunks) > 3  # 40 rows do not fit one 40-token chunk
    covered: list[int] = []
    for chunk in cost_chunks:
        head, *rows = chunk.text.split("\n")[2:]
        assert chunk.text.startswith("Costs\nItem | 2020 | 2021\n")
        first, _, last = chunk.metadata["rows"].partition("-")
        numbers = list(range(int(first), int(last or first) + 1))
        # Whole rows only, and exactly the rows it cites (row n holds "Widget n-1").
        assert [f"Widget {n - 1} | {(n - 1) * 10} | {(n - 1) * 11}" for n in numbers] == [
            head,
            *rows,
        ]
        covered.extend(numbers)
    assert covered == list(range(2, 42))  # every row once: no overlap between table chunks
    staff = [c for c in chunks if c.metadata["sheet"] == "Staff"]
    assert staff[0].text == "Staff\nName | Role\nAda | Engineer\nGrace | Admiral"
    assert staff[0].metadata["rows"] == "2-3"


def test_csv_delimiter_is_sniffed_and_rows_keep_their_column_names() -> None:
    for delimiter in (",", ";", "\t", "|"):
        data = delimiter.join(["city", "year", "rain_mm"]) + "\n"
        data += delimiter.join(["Lisbon", "2021", "774"]) + "\n"
        data += delimiter.join(["Porto", "2021", "1254"]) + "\n"
        (section,) = parse_document(data.encode(), "rain.csv")
        assert section.header == "city | year | rain_mm"
        assert section.text == "Lisbon | 2021 | 774\nPorto | 2021 | 1254"
    assert detect_format(b"a\tb\n1\t2\n", "x.tsv") == "tsv"


def test_eml_body_and_each_attachment_as_its_own_section() -> None:
    message, attachment = sections_of("harvest.eml")
    assert message.title == "Harvest report"
    assert "the apple harvest was early this year." in message.text
    assert "From: Alice <alice@example.com>" in message.text
    # The unreadable attachment is named with its reason; no MIME or base64 is indexed.
    assert "blob.bin (not read: unsupported file type: binary data)" in message.text
    assert "Content-Transfer-Encoding" not in message.text and "base64" not in message.text
    assert attachment.metadata["section"] == "Attachment: notes.txt"
    assert attachment.text == "Orchard notes: the pear trees need pruning in November."


def test_epub_chapters_become_sections() -> None:
    first, second = sections_of("voyage.epub")
    assert (first.metadata["chapter"], first.metadata["section"]) == (1, "The Voyage")
    assert "left Bristol" in first.text and "fresh water" in second.text
    assert second.metadata["section"] == "The Island"


def test_markdown_headings_give_section_paths() -> None:
    text = b"# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n### Linux\n\nUse apt.\n\n## Use\n\nGo.\n"
    sections = parse_document(text, "guide.md")
    assert [s.metadata["section"] for s in sections] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Use",
    ]
    assert sections[2].text == "Linux\nUse apt."


def test_web_page_keeps_its_article_and_drops_navigation_and_footer() -> None:
    article = " ".join(
        f"Sentence {n} about the migration of cranes over the Baltic sea." for n in range(30)
    )
    html = (
        "<html><head><title>Cranes</title><meta charset='gb2312'></head><body>"
        "<nav><ul><li><a href='/'>Home</a></li>"
        "<li><a href='/shop'>Shop the sale</a></li></ul></nav>"
        "<div class='cookie'>We use cookies to improve your experience.</div>"
        f"<article><h1>Crane migration</h1><p>{article}</p><p>Über 10.000 Kraniche.</p></article>"
        "<footer>Copyright 2026 Example Media. All rights reserved.</footer></body></html>"
    )
    sections = parse_document(html.encode("utf-8"), "cranes.html")
    text = "\n".join(s.text for s in sections)
    assert "migration of cranes" in text and "Über 10.000 Kraniche." in text  # UTF-8 wins
    assert "Shop the sale" not in text and "All rights reserved" not in text
    assert all(s.title == "Cranes" for s in sections)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bomb.docx", "zip bomb"),
        ("laughs.docx", "hostile XML"),
        ("locked.pdf", "encrypted PDF: a password is needed"),
    ],
)
def test_hostile_or_locked_files_fail_alone_and_fast_with_the_reason(
    name: str, reason: str
) -> None:
    started = time.monotonic()
    with pytest.raises(DocumentError, match=reason):
        sections_of(name)
    assert time.monotonic() - started < 5


def test_xxe_entity_is_never_resolved() -> None:
    text = "\n".join(s.text for s in sections_of("xxe.docx"))
    assert "root:" not in text and "before" in text


def test_legacy_and_unknown_containers_are_refused_by_name() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("photo.jpg", b"not really")
    with pytest.raises(DocumentError, match="ZIP archive \\(not an Office"):
        parse_document(out.getvalue(), "photos.zip")


def test_every_format_has_a_content_type() -> None:
    from ingestion.pipeline.parse import FORMATS

    assert set(FORMATS) == set(CONTENT_TYPES)
    assert all(len(v) <= 100 for v in CONTENT_TYPES.values())  # the model's field


requires_ocr = pytest.mark.skipif(
    shutil.which("tesseract") is None and os.environ.get("CI") != "true",
    reason="tesseract-ocr is not installed (.ci/run installs it)",
)


@requires_ocr
def test_a_scanned_image_is_read_by_ocr_and_marked() -> None:
    (section,) = sections_of("scan.png", "scan-without-extension")
    assert section.metadata == {"ocr": True}
    assert "Invoice number 4711" in section.text and "128 euros" in section.text


@requires_ocr
def test_ocr_runs_in_the_sandbox_with_its_budget_and_memory_limit() -> None:
    with ParseSandbox(60, memory_mb=2048) as sandbox:
        (section,) = sandbox.parse(read("scan.png"), "scan.png", max_bytes=None)
        assert "4711" in section.text
        with pytest.raises(DocumentError, match="zip bomb"):
            sandbox.parse(read("bomb.docx"), "bomb.docx", max_bytes=None)


def _word97(pieces: list[tuple[str, bool]]) -> tuple[bytes, bytes]:
    """WordDocument and table streams holding ``pieces`` (text, 8-bit?) in a piece table,
    as Word 97-2003 writes them."""
    word = bytearray(0x0400)
    body = bytearray()
    cps, pcds, cp = [0], [], 0
    for text, compressed in pieces:
        offset = len(word) + len(body)
        if compressed:
            body += text.encode("cp1252")
            fc = (offset * 2) | 0x40000000
        else:
            body += text.encode("utf-16-le")
            fc = offset
        cp += len(text)
        cps.append(cp)
        pcds.append(b"\x00\x00" + fc.to_bytes(4, "little") + b"\x00\x00")
    word += body
    plc = b"".join(c.to_bytes(4, "little") for c in cps) + b"".join(pcds)
    clx = b"\x01\x02\x00ab" + b"\x02" + len(plc).to_bytes(4, "little") + plc
    table = b"\x00" * 16 + clx
    word[0x4C:0x50] = cp.to_bytes(4, "little")
    word[0x01A2:0x01A6] = (16).to_bytes(4, "little")
    word[0x01A6:0x01AA] = len(clx).to_bytes(4, "little")
    return bytes(word), table


def test_word97_text_is_read_through_its_piece_table() -> None:
    from ingestion.pipeline.office import doc_plain, doc_text

    word, table = _word97(
        [("Caf\xe9 menu\r", True), ("Prix: \x13 PAGE \x14" + "12\x15 \u20ac\r", False)]
    )
    text = doc_text(word, table)
    assert text == "Caf\xe9 menu\rPrix: \x13 PAGE \x1412\x15 \u20ac\r"
    assert doc_plain(text) == "Caf\xe9 menu\nPrix: 12 \u20ac\n"  # field code dropped


def test_side_by_side_tables_in_a_sheet_and_its_chart_come_apart() -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Birds"
    sheet.append(["Species", "Count", None, "Lake", "Depth"])
    sheet.append(["Heron", 4, None, "Tegel", 16])
    sheet.append(["Crane", 9, None, "Wannsee", 9])
    sheet.append([])
    sheet.append(["Seen in 2026 only"])
    out = io.BytesIO()
    book.save(out)
    chart = (
        '<c:chartSpace xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart" '
        'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><c:chart>'
        "<c:title><c:tx><c:rich><a:p><a:r><a:t>Birds seen</a:t></a:r></a:p></c:rich></c:tx>"
        "</c:title><c:plotArea><c:barChart><c:ser><c:tx><c:strRef><c:strCache><c:pt idx='0'>"
        "<c:v>Count</c:v></c:pt></c:strCache></c:strRef></c:tx><c:cat><c:strRef><c:strCache>"
        "<c:pt idx='1'><c:v>Crane</c:v></c:pt><c:pt idx='0'><c:v>Heron</c:v></c:pt>"
        "</c:strCache></c:strRef></c:cat><c:val><c:numRef><c:numCache><c:pt idx='0'><c:v>4</c:v>"
        "</c:pt><c:pt idx='1'><c:v>9</c:v></c:pt></c:numCache></c:numRef></c:val></c:ser>"
        "</c:barChart></c:plotArea></c:chart></c:chartSpace>"
    )
    data = io.BytesIO()
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(data, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        target.writestr("xl/charts/chart1.xml", chart)
    species, lakes, note, chart_table = parse_document(data.getvalue(), "birds.xlsx")
    assert (species.header, species.text) == ("Birds\nSpecies | Count", "Heron | 4\nCrane | 9")
    assert (lakes.header, lakes.text, lakes.rows) == (
        "Lake | Depth",
        "Tegel | 16\nWannsee | 9",
        (2, 3),
    )
    assert note.text == "Seen in 2026 only" and note.metadata["sheet"] == "Birds"
    assert chart_table.metadata == {"section": "Chart: Birds seen"}
    assert chart_table.text == "Heron | 4\nCrane | 9" and chart_table.header.endswith(" | Count")


def test_a_merged_cell_reads_in_each_cell_it_covers() -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Results"
    table = slide.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate([("Group", "Score", ""), ("A", "1", "2"), ("B", "3", "4")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(0, 1).merge(table.cell(0, 2))
    out = io.BytesIO()
    deck.save(out)
    sections = parse_document(out.getvalue(), "results.pptx")
    rows = next(s for s in sections if s.header)
    assert rows.header.endswith("Group | Score | Score")
    assert rows.text == "A | 1 | 2\nB | 3 | 4"
