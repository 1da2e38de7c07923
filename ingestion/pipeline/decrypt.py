"""Opening password-protected files with the password their uploader gave: encrypted PDFs
(pypdf) and encrypted Office files (msoffcrypto-tool: Word, Excel and PowerPoint 2007+
and their 97-2003 forms). Runs in the parsing sandbox (a crafted file is as hostile here as
anywhere); the decrypted file is what gets stored, so the password itself is never kept."""

from __future__ import annotations

import io

from ragstudio.core.types import DocumentError

_PDF = b"%PDF-"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def may_be_encrypted(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first KB) is of a kind a password opens:
    a PDF or an OLE container (encrypted Office files of any age are OLE)."""
    return head.lstrip().startswith(_PDF) or head.startswith(_OLE)


def decrypt_document(data: bytes, password: str, *, max_bytes: int) -> bytes | None:
    """The file opened with ``password``; None when it is not encrypted (nothing to do).
    A wrong password, a damaged file or a decrypted file over ``max_bytes`` is a
    DocumentError with the reason."""
    if not may_be_encrypted(data[:1024]):
        return None
    opener = _decrypt_office if data.startswith(_OLE) else _decrypt_pdf
    out = opener(data, password)
    if out is not None and len(out) > max_bytes:
        raise DocumentError(f"the decrypted file is too large: over {max_bytes:,} bytes")
    return out


def _decrypt_pdf(data: bytes, password: str) -> bytes | None:
    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import LimitReachedError, PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if not reader.is_encrypted:
            return None
        if not reader.decrypt(password):
            raise DocumentError("encrypted PDF: the password given does not open it")
        writer = PdfWriter(clone_from=reader)
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()
    except DocumentError:
        raise
    except LimitReachedError:
        raise DocumentError(
            "the PDF expands past the decompression limit (a decompression bomb?)"
        ) from None
    except NotImplementedError as exc:  # an encryption pypdf does not know
        raise DocumentError(f"encrypted PDF: this encryption cannot be opened ({exc})") from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"damaged PDF: {exc}") from None


def _decrypt_office(data: bytes, password: str) -> bytes | None:
    import msoffcrypto
    from msoffcrypto.exceptions import DecryptionError, InvalidKeyError, ParseError

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        encrypted = office.is_encrypted()
    except Exception:  # an OLE file of another kind (an Outlook message): nothing to open
        return None
    if not encrypted:
        return None
    try:
        office.load_key(password=password, verify_password=True)
        out = io.BytesIO()
        office.decrypt(out)
        return out.getvalue()
    except InvalidKeyError:
        raise DocumentError(
            "encrypted Office document: the password given does not open it"
        ) from None
    except (DecryptionError, ParseError) as exc:
        raise DocumentError(f"encrypted Office document: it cannot be opened ({exc})") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
        raise DocumentError(f"damaged Office document: {exc}") from None
