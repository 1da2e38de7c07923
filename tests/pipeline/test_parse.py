from __future__ import annotations

import json

import pytest

from ingestion.pipeline.parse import HTML, JSONL, MARKDOWN, PDF, TEXT, detect_format, parse_document
from ragstudio.core.types import DocumentError
from tests.helpers import make_pdf


def test_plain_text_is_returned_whole() -> None:
    sections = parse_document(b"Hello world.\r\nSecond line.", "notes.txt")
    assert [s.text for s in sections] == ["Hello world.\nSecond line."]


def test_format_is_detected_by_content_not_extension() -> None:
    html = b"<!DOCTYPE html><html><body><p>Hi</p></body></html>"
    assert detect_format(html, "misnamed.txt") == HTML
    assert detect_format(make_pdf(["x"]), "report.txt") == PDF
    assert detect_format(b'{"id": 1, "text": "a"}\n', "data.txt") == JSONL
    assert (
        detect_format(b"# Title\n\nSome *text* and a [link](http://x).\n- item\n", "n.md")
        == MARKDOWN
    )
    assert detect_format(b"just words", "README") == TEXT


def test_markdown_without_extension_is_recognised_by_its_syntax() -> None:
    body = b"# Heading\n\nSee [the docs](http://a.b).\n\n- one\n- two\n"
    assert detect_format(body, "notes.markdownish") == MARKDOWN


def test_markdown_syntax_is_stripped_but_text_kept() -> None:
    md = (
        b"# Install\n\nRun **make run** and open [the app](http://127.0.0.1:8000).\n\n"
        b"```\ncode here\n```\n"
    )
    (section,) = parse_document(md, "guide.md")
    assert "Install" in section.text
    assert "Run make run and open the app." in section.text
    assert "code here" in section.text
    assert "http://" not in section.text and "**" not in section.text and "#" not in section.text


def test_html_keeps_text_and_drops_scripts_styles_and_head() -> None:
    html = (
        b"<html><head><title>Doc title</title><style>p{color:red}</style></head><body>"
        b"<script>var secret = 1;</script><h1>Visible</h1><p>Body &amp; text</p>"
        b"<noscript>no js</noscript></body></html>"
    )
    (section,) = parse_document(html, "page.html")
    assert section.title == "Doc title"
    assert "Visible" in section.text and "Body & text" in section.text
    for hidden in ("secret", "color:red", "no js", "Doc title"):
        assert hidden not in section.text


def test_pdf_text_layer_is_read_page_by_page() -> None:
    sections = parse_document(make_pdf(["First page text", "Second page text"]), "a.pdf")
    assert [(s.page, s.text) for s in sections] == [(1, "First page text"), (2, "Second page text")]


def test_jsonl_records_become_sections_with_ids_titles_and_metadata() -> None:
    lines = [
        {"id": "a1", "title": "Alpha", "text": "First record.", "metadata": {"lang": "en"}},
        {"_id": 7, "text": "Second record."},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode() + b"\n\n"
    first, second = parse_document(data, "records.jsonl")
    assert (first.record_id, first.title, first.metadata) == ("a1", "Alpha", {"lang": "en"})
    assert first.text == "Alpha\n\nFirst record."
    assert (second.record_id, second.text) == ("7", "Second record.")


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "empty.txt", "empty file"),
        (b"   \n\t ", "blank.txt", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "pic.txt", "damaged PNG image"),
        (b"PK\x03\x04rest-of-zip", "doc.docx", "damaged zip container"),
        (b"GIF89a\x01\x00", "anim.gif", "unsupported file type: GIF image"),
        (b"abc\x00\x01\x02def" * 10, "blob.bin", "binary data"),
        (b"%PDF-1.4\nthis is not really a pdf", "broken.pdf", "damaged PDF"),
        (make_pdf([""]), "scan.pdf", "no text"),
        (b'{"id": 1, "text": "ok"}\n{"id": 2, "text": ', "bad.jsonl", "line 2: not valid JSON"),
        (
            b'{"id": 1, "text": "ok"}\n{"id": 1, "text": "again"}\n',
            "dup.jsonl",
            "duplicate record id",
        ),
        (b'{"id": 1, "text": "ok"}\n{"id": 2, "text": 5}\n', "t.jsonl", "'text' must be a string"),
        (b'{"id": 1, "text": "ok"}\n[1, 2]\n', "arr.jsonl", "must be a JSON object"),
    ],
)
def test_bad_input_fails_with_a_clear_message(data: bytes, name: str, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_document(data, name)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(DocumentError, match="file too large: 2,000 bytes"):
        parse_document(b"a" * 2000, "big.txt", max_bytes=1000)


def test_utf16_and_latin1_text_are_decoded() -> None:
    assert parse_document("Grüße aus Köln".encode("utf-16"), "a.txt")[0].text == "Grüße aus Köln"
    assert parse_document("café crème".encode("cp1252"), "b.txt")[0].text == "café crème"


def test_sniffing_a_long_utf8_file_cut_mid_character_still_detects_text() -> None:
    data = ("é" * 40000).encode()  # 80,000 bytes: the 64 KiB sniff window ends mid-character
    assert detect_format(data, "long.txt") == TEXT


def _finishes(function, *args, seconds: float = 10.0):  # type: ignore[no-untyped-def]
    """Run function(*args) in a thread; fail when it has not returned after ``seconds``.
    The inputs below took minutes with the old quadratic patterns (measured 2.9 s for 16,000
    newlines, growing with the square) and take milliseconds now: a 1000x margin."""
    import threading

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} did not finish in {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def test_sniffing_is_linear_on_hostile_text() -> None:
    """Issue 11, case 1: `\\s*` after `^` crossed newlines (16,000 newlines + "x": 2.9 s
    inside the upload request); an unclosed "[" per line scanned to the end each time."""
    newlines = b"\n" * 400_000 + b"x"
    assert _finishes(detect_format, newlines, "notes.cfg") == TEXT
    brackets = b"[" * 400_000
    assert _finishes(detect_format, brackets, "notes.cfg") == TEXT
    # The request reads a few KB only; the worker parses the whole file.
    assert len(newlines) > 8192


def test_markdown_rules_are_linear_on_one_long_line() -> None:
    """Issue 11, case 2: the emphasis rule was quadratic on one long line (" _a" * 8000,
    24 KB: 1.9 s); a 1 MB line projected to an hour in the worker."""
    for line in (" _a" * 400_000, "**a" * 300_000, "<" * 1_000_000, "x`" * 500_000):
        sections = _finishes(parse_document, line.encode(), "long.md")
        assert sections and sections[0].text.strip()
    # The rules still do their job on ordinary Markdown.
    text = parse_document(b"# Title\n\nSome *emphasis*, **bold** and [a link](http://x).", "a.md")
    assert text[0].text == "Title\nSome emphasis, bold and a link."


def test_deeply_nested_json_is_a_clear_rejection() -> None:
    """Issue 11, case 3: 50,000 "[" on the first line of a .jsonl raised RecursionError."""
    nested = b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(DocumentError, match="first record has no 'text' field"):
        detect_format(nested, "deep.jsonl")
    record = b'{"text": "fine", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(DocumentError, match="the first line is JSON nested too deeply"):
        detect_format(record, "deep.jsonl")
    later = b'{"text": "fine"}\n{"text": "x", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(DocumentError, match="line 2: JSON nested too deeply"):
        parse_document(later, "deep.jsonl")


def test_a_jsonl_file_whose_first_record_is_longer_than_the_sniffed_head_is_read() -> None:
    """Issue 25, case 9: a valid .jsonl whose first line is 9.8 KB was refused as 'first
    record has no text field' (the format was sniffed from its first 8 KB)."""
    import json

    from ingestion.pipeline.parse import SNIFF_BYTES

    second = json.dumps({"id": "b", "text": "Second record."})
    # "text" within the first 8 KB: records whatever the name; past it, the name says so.
    early = json.dumps({"id": "a", "text": "First record.", "meta": "x" * 9800})
    late = json.dumps({"id": "a", "meta": "x" * 9800, "text": "First record."})
    assert len(early) > SNIFF_BYTES
    for first, names in ((early, ("r.jsonl", "r.txt", "r")), (late, ("r.jsonl", "r.ndjson"))):
        data = f"{first}\n{second}\n".encode()
        for name in names:
            assert detect_format(data, name) == JSONL, name
            assert detect_format(data[:SNIFF_BYTES], name) == JSONL, name  # the upload's sniff
        texts = [s.text for s in parse_document(data, names[0])]
        assert texts == ["First record.", "Second record."]
    # A long first line without a "text" key is still not taken for records.
    prose = ("{ not json " + "word " * 3000).encode()
    assert detect_format(prose, "notes.txt") == TEXT
