"""The hostile corpus (issue 11): files built to freeze, crash or fool the upload and the
worker, each with the verdict it must get. Big ones are generated here rather than
committed; `python tests/data/hostile/generate.py DIR` writes them all to DIR.

A verdict is ("rejected", reason) at upload, ("failed", reason) in the worker, or
("indexed", None)."""

from __future__ import annotations

import io
import sys
import zipfile
import zlib
from pathlib import Path

Verdict = tuple[str, str | None]
# A verdict is also ("refused", reason): the whole request is refused (JSON 400) before any
# file is read, so such a file goes in a request of its own.


def _pdf(objects: list[bytes], *, xref: bool = True) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for offset in offsets:
            out += b"%010d 00000 n \n" % offset
    else:  # a table that points nowhere
        out += b"xref\n0 2\n0000000000 65535 f \n9999999999 00000 n \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        start,
    )
    return bytes(out)


def _page_objects(content: bytes, *, flate: bool = False) -> list[bytes]:
    stream = zlib.compress(content, 9) if flate else content
    filters = b" /Filter /FlateDecode" if flate else b""
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d%s >>\nstream\n" % (len(stream), filters) + stream + b"\nendstream",
    ]


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.txt", b"0" * (50 * 1024 * 1024))
    return buffer.getvalue()


def corpus() -> list[tuple[str, bytes, Verdict]]:
    """(filename, content, verdict) for every hostile case."""
    text_pdf = _page_objects(b"BT /F1 12 Tf 72 720 Td (broken xref survivor) Tj ET")
    return [
        ("archive.zip", _zip_bomb(), ("rejected", "unsupported file type: ZIP archive")),
        (
            "bomb.pdf",
            _pdf(_page_objects(b"BT (x) Tj ET\n" + b" " * (300 * 1024 * 1024), flate=True)),
            ("failed", "the PDF expands past the decompression limit"),
        ),
        (
            "deep.jsonl",
            b'{"text": "x", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n",
            ("rejected", "the first line is JSON nested too deeply"),
        ),
        ("latin.txt", b"caf\xe9 cr\xe8me br\xfbl\xe9e, " * 200, ("indexed", None)),
        ("nul.txt", b"text\x00with\x00nul\x00bytes " * 100, ("rejected", "binary data")),
        ("notes.rst", b"\n" * 60_000 + b"x", ("indexed", None)),  # the old sniff: 2.9 s+
        ("one-line.md", b" _a" * 3_500_000, ("failed", "took longer than")),  # 10 MB
        (
            "nested.html",
            b"<html><body>" + b"<div>" * 100_000 + b"deep text" + b"</div>" * 100_000,
            ("indexed", None),
        ),
        ("../../etc/passwd", b"root:x:0:0 is not a secret here", ("indexed", None)),
        (
            "n" * 5000 + ".txt",
            b"a long name for a short note",
            ("refused", "the multipart body could not be read"),
        ),
        ("m" * 300 + ".txt", b"a long name, cut to 255 characters", ("indexed", None)),
        ("broken-xref.pdf", _pdf(text_pdf, xref=False), ("indexed", None)),
        ("report.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, ("failed", "damaged PNG image")),
        ("anim.pdf", b"GIF89a" + b"\x00" * 64, ("rejected", "unsupported file type: GIF image")),
        ("photo.png", b"Plain words in a file that says it is a picture.", ("indexed", None)),
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile")
    target.mkdir(parents=True, exist_ok=True)
    for index, (name, content, verdict) in enumerate(corpus()):
        safe = f"{index:02d}-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in name)
        (target / safe[:100]).write_bytes(content)
        print(f"{safe[:60]:<60} {len(content):>12,} bytes  {verdict[0]}: {verdict[1] or ''}")
