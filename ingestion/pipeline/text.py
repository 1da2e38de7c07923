"""Text from bytes, and Markdown's markup removed: shared by every reader."""

from __future__ import annotations

import re

from ingestion.pipeline.structure import normalize
from ragstudio.core.types import DocumentError


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
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>])"), r"\1"),  # backslash escapes
]


def markdown_to_text(text: str) -> str:
    for pattern, replacement in _MD_RULES:
        text = pattern.sub(replacement, text)
    return normalize(text)
