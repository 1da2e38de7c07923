"""Small documents in every format the parser reads, made with the libraries that write
them (python-docx, python-pptx, openpyxl, pypdf, Pillow, the standard library), plus
hostile ones: a zip bomb, an XXE and a billion-laughs Word file, an encrypted PDF.

`python -m tests.data.documents` writes them into tests/data/documents/ (committed); the
tests read them from there."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent / "documents"


def docx_with_headings_and_table() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Installation", level=1)
    document.add_paragraph("Read this before installing the telescope mount.")
    document.add_heading("Requirements", level=2)
    document.add_paragraph("The mount needs a 12 volt supply and a level tripod.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(
        table.rows,
        [
            ("Part", "Year", "Cost"),
            ("Tripod", "2021", "340 EUR"),
            ("Counterweight", "2022", "95 EUR"),
        ],
        strict=True,
    ):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_heading("Usage", level=1)
    document.add_paragraph("Align the polar axis with the celestial pole.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx_with_notes() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    for title, body, notes in [
        ("Quarterly results", "Revenue grew in every region.", "Mention the Lisbon office."),
        ("Next steps", "Hire two geologists.", "Budget approved in March."),
    ]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx_two_sheets() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    costs = book.active
    costs.title = "Costs"
    costs.append(["Item", "2020", "2021"])
    for n in range(1, 41):
        costs.append([f"Widget {n}", n * 10, n * 11])
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Ada", "Engineer"])
    staff.append(["Grace", "Admiral"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def eml_with_attachment() -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "Bob <bob@example.com>"
    message["Subject"] = "Harvest report"
    message["Date"] = "Tue, 01 Sep 2026 10:00:00 +0000"
    message.set_content("Bob,\n\nthe apple harvest was early this year.\n\nAlice")
    message.add_attachment(
        b"Orchard notes: the pear trees need pruning in November.",
        maintype="text",
        subtype="plain",
        filename="notes.txt",
    )
    message.add_attachment(
        b"\x00\x01\x02", maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    return bytes(message)


def epub_two_chapters() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        z.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            "<manifest>"
            '<item id="c1" href="one.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c2" href="two.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>',
        )
        for name, title, text in [
            ("one.xhtml", "The Voyage", "The ship left Bristol in a gale."),
            ("two.xhtml", "The Island", "On the island they found fresh water."),
        ]:
            z.writestr(
                f"OEBPS/{name}",
                f'<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>{title}</h1>'
                f"<p>{text}</p></body></html>",
            )
    return out.getvalue()


def scanned_page_png() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1400, 300), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    draw.text((40, 60), "Invoice number 4711", fill=0, font=font)
    draw.text((40, 160), "Total due: 128 euros", fill=0, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def encrypted_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx() -> bytes:
    """A DOCX-shaped zip whose one entry inflates 64 MB of zeros from about 64 KB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w") as entry:
            block = b"\x00" * (1 << 20)
            for _ in range(64):
                entry.write(block)
    return out.getvalue()


def _docx_with_body(doctype: str, body: str, *, xml: str = "") -> bytes:
    """The manual with its body replaced: one paragraph of text ``body``, or the
    paragraphs in ``xml``."""
    base = io.BytesIO(docx_with_headings_and_table())
    out = io.BytesIO()
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    m = "http://schemas.openxmlformats.org/officeDocument/2006/math"
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "word/document.xml":
                paragraphs = xml or f"<w:p><w:r><w:t>{body}</w:t></w:r></w:p>"
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?>{doctype}'
                    f'<w:document xmlns:w="{w}" xmlns:m="{m}"><w:body>{paragraphs}'
                    "</w:body></w:document>"
                ).encode()
            z.writestr(info, data)
    return out.getvalue()


def _omml_run(text: str) -> str:
    return f"<m:r><m:t>{text}</m:t></m:r>"


def docx_with_equations() -> bytes:
    """An inline equation, one on a line of its own, and one the LaTeX converter refuses
    (a limit under a named operator)."""
    r = _omml_run
    square = f"<m:sSup><m:e>{r('r')}</m:e><m:sup>{r('2')}</m:sup></m:sSup>"
    area = f"<m:oMath>{r('A=π')}{square}</m:oMath>"
    half = f"<m:oMath>{r('y=')}<m:f><m:num>{r('x')}</m:num><m:den>{r('2')}</m:den></m:f></m:oMath>"
    argmax = (
        f"<m:oMath><m:func><m:fName><m:limLow><m:e>{r('argmax')}</m:e><m:lim>{r('ϵ')}</m:lim>"
        f"</m:limLow></m:fName><m:e>{r('f(x)')}</m:e></m:func></m:oMath>"
    )
    return _docx_with_body(
        "",
        "",
        xml=(
            f"<w:p><w:r><w:t xml:space='preserve'>A circle's area is </w:t></w:r>{area}"
            "<w:r><w:t xml:space='preserve'> for its radius.</w:t></w:r></w:p>"
            f"<w:p><m:oMathPara>{half}</m:oMathPara></w:p>"
            f"<w:p><w:r><w:t xml:space='preserve'>The best: </w:t></w:r>{argmax}</w:p>"
        ),
    )


def xxe_docx() -> bytes:
    return _docx_with_body(
        '<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        "before &xxe; after",
    )


def billion_laughs_docx() -> bytes:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    return _docx_with_body(f"<!DOCTYPE w:document [{entities}]>", "laugh &lol9;")


FIXTURES = {
    "manual.docx": docx_with_headings_and_table,
    "equations.docx": docx_with_equations,
    "deck.pptx": pptx_with_notes,
    "budget.xlsx": xlsx_two_sheets,
    "harvest.eml": eml_with_attachment,
    "voyage.epub": epub_two_chapters,
    "scan.png": scanned_page_png,
    "locked.pdf": encrypted_pdf,
    "bomb.docx": zip_bomb_docx,
    "xxe.docx": xxe_docx,
    "laughs.docx": billion_laughs_docx,
}


def write_all() -> None:
    HERE.mkdir(exist_ok=True)
    for name, make in FIXTURES.items():
        (HERE / name).write_bytes(make())


if __name__ == "__main__":
    write_all()
