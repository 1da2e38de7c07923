"""E-mail (RFC 822 ``.eml`` and Outlook ``.msg``) and RTF. A message becomes a section of
its headers and body (text, or the HTML part read as a page), then one section per
attachment, parsed as a file of its own; an attachment that cannot be read is named in the
message's section with the reason."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage, Message
from typing import Any

from ingestion.pipeline.structure import normalize
from ingestion.pipeline.web import html_sections
from ragstudio.core.types import DocumentError, Section

# Attachments inside attachments (a message forwarded as a file) are read this deep.
MAX_DEPTH = 3
MAX_ATTACHMENTS = 100
_HEADER_LINE = re.compile(rb"^([A-Za-z][A-Za-z0-9-]{0,40}):[ \t]?", re.M)
_MAIL_HEADERS = {
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version",
    b"received", b"return-path", b"reply-to", b"content-type", b"x-mailer",
}  # fmt: skip

Parse = Callable[[bytes, str, int], list[Section]]


def looks_like_email(head: bytes) -> bool:
    """The file starts with a header block of RFC 822 fields that mail uses (From and at
    least two others), before its first blank line."""
    if head.startswith(b"From "):  # an mbox file's envelope line
        head = head.split(b"\n", 1)[-1]
    block = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
    names = {m.group(1).lower() for m in _HEADER_LINE.finditer(block)}
    first = _HEADER_LINE.match(block)
    return bool(first) and b"from" in names and len(names & _MAIL_HEADERS) >= 3


def _header_text(fields: list[tuple[str, str]], attachments: list[str]) -> str:
    lines = [f"{name}: {value}" for name, value in fields if value]
    if attachments:
        lines.append("Attachments: " + "; ".join(attachments))
    return "\n".join(lines)


def _attachment_sections(
    name: str, payload: bytes, parse: Parse, depth: int, notes: list[str]
) -> list[Section]:
    if depth >= MAX_DEPTH:
        notes.append(f"{name} (not read: attachments nested too deep)")
        return []
    try:
        inner = parse(payload, name, depth + 1)
    except DocumentError as exc:
        notes.append(f"{name} (not read: {exc})")
        return []
    notes.append(name)
    out = []
    for section in inner:
        meta = {**section.metadata, "attachment": name}
        path = f"Attachment: {name}"
        meta["section"] = f"{path} > {meta['section']}" if meta.get("section") else path
        out.append(
            Section(
                text=section.text,
                title=section.title or name,
                page=section.page,
                metadata=meta,
                header=section.header,
                rows=section.rows,
            )
        )
    return out


def _html_body(html: str) -> str:
    return "\n\n".join(s.text for s in html_sections(html, main_content=False))


def read_eml(data: bytes, parse: Parse, depth: int = 0) -> list[Section]:
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[-1]
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(message, EmailMessage):
        raise DocumentError("unreadable e-mail message")
    subject = str(message.get("subject", "") or "")
    fields = [(n, str(message.get(n, "") or "")) for n in ("From", "To", "Cc", "Date", "Subject")]
    try:
        body_part = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, LookupError):
        body_part = None
    body = ""
    if body_part is not None:
        try:
            content = body_part.get_content()
        except (LookupError, UnicodeError, ValueError):
            content = body_part.get_payload(decode=True) or b""
            content = content.decode("utf-8", "replace") if isinstance(content, bytes) else ""
        body = _html_body(content) if body_part.get_content_type() == "text/html" else content
    notes: list[str] = []
    attachments: list[Section] = []
    for number, part in enumerate(message.iter_attachments()):
        if number >= MAX_ATTACHMENTS:
            notes.append(f"{MAX_ATTACHMENTS}+ more (not read: too many attachments)")
            break
        name = part.get_filename() or f"attachment-{number + 1}"
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            payload = first.as_bytes() if isinstance(first, Message) else part.as_bytes()
        else:
            raw = part.get_payload(decode=True)
            payload = raw if isinstance(raw, bytes) else b""
        attachments.extend(_attachment_sections(name, payload, parse, depth, notes))
    head = _header_text(fields, notes)
    text = normalize(f"{head}\n\n{body}")
    sections = [Section(text=text, title=subject, metadata={"section": "Message"})]
    return [s for s in sections if s.text] + attachments


def read_msg(data: bytes, parse: Parse, depth: int = 0) -> list[Section]:
    import extract_msg
    from extract_msg.exceptions import ExMsgBaseException

    try:
        message: Any = extract_msg.openMsg(data)
    except (ExMsgBaseException, OSError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"damaged Outlook message: {exc}") from None
    try:
        subject = str(message.subject or "")
        fields = [
            ("From", str(getattr(message, "sender", "") or "")),
            ("To", str(getattr(message, "to", "") or "")),
            ("Cc", str(getattr(message, "cc", "") or "")),
            ("Date", str(getattr(message, "date", "") or "")),
            ("Subject", subject),
        ]
        body = message.body or ""
        if not body.strip() and message.htmlBody:
            raw = message.htmlBody
            body = _html_body(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        notes: list[str] = []
        attachments: list[Section] = []
        for number, attachment in enumerate(message.attachments):
            if number >= MAX_ATTACHMENTS:
                notes.append(f"{MAX_ATTACHMENTS}+ more (not read: too many attachments)")
                break
            name = (
                getattr(attachment, "longFilename", None)
                or getattr(attachment, "shortFilename", None)
                or f"attachment-{number + 1}"
            )
            payload = attachment.data
            if not isinstance(payload, bytes):  # an embedded message
                notes.append(f"{name} (not read: an embedded Outlook item)")
                continue
            attachments.extend(_attachment_sections(name, payload, parse, depth, notes))
    finally:
        message.close()
    text = normalize(f"{_header_text(fields, notes)}\n\n{body}")
    return [Section(text=text, title=subject, metadata={"section": "Message"}), *attachments]


def read_rtf(text: str) -> list[Section]:
    from striprtf.striprtf import rtf_to_text

    try:
        plain = rtf_to_text(text, errors="ignore")
    except (ValueError, IndexError, KeyError) as exc:
        raise DocumentError(f"unreadable RTF: {exc}") from None
    return [Section(text=normalize(plain))]
