"""Offline OCR with Tesseract (Debian's ``tesseract-ocr`` and its language packs: the
models are installed files, nothing is downloaded). Image files and the pages of a PDF
that have no text layer are read; their sections say ``ocr: true``."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

from ragstudio.core.types import DocumentError

# Languages tried together, as Tesseract names them; those not installed are left out.
DEFAULT_LANGUAGES = "eng+deu+fra+spa"
RENDER_DPI = 300
MAX_PIXELS = 60_000_000  # an image (or a rendered page) is refused above this
OCR_TIMEOUT = 120.0  # seconds for one image; the parse budget normally ends it first


@cache
def _installed() -> tuple[str | None, frozenset[str]]:
    binary = shutil.which("tesseract")
    if binary is None:
        return None, frozenset()
    try:
        out = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None, frozenset()
    return binary, frozenset(line.strip() for line in out.splitlines()[1:] if line.strip())


def languages() -> str:
    wanted = os.environ.get("RAGSTUDIO_OCR_LANGUAGES", DEFAULT_LANGUAGES)
    _binary, have = _installed()
    chosen = [lang for lang in wanted.split("+") if lang in have]
    return "+".join(chosen)


def available() -> bool:
    return _installed()[0] is not None and bool(languages())


def ocr_image(png: bytes) -> str:
    """The text Tesseract reads in one image (any format Leptonica reads)."""
    binary, _ = _installed()
    langs = languages()
    if binary is None or not langs:
        raise DocumentError(
            "OCR is not installed on this server (install tesseract-ocr and its language "
            "packs: see docs/formats.md)"
        )
    try:
        done = subprocess.run(
            [binary, "stdin", "stdout", "-l", langs, "--psm", "3"],
            input=png,
            capture_output=True,
            timeout=OCR_TIMEOUT,
            check=False,
            # One thread: the worker's cores are shared, and Tesseract's threads cost more
            # than they give on small machines.
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
    except subprocess.TimeoutExpired:
        raise DocumentError(f"OCR took longer than {OCR_TIMEOUT:g} s") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise DocumentError(f"OCR failed: {reason[0][:200]}")
    return done.stdout.decode("utf-8", "replace")


def image_to_png(data: bytes, kind: str = "") -> list[bytes]:
    """Each frame of an image file (a TIFF may hold pages) as PNG, size-checked. ``kind``
    names the format in errors."""
    import io

    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    frames = []
    try:
        with Image.open(io.BytesIO(data)) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                if image.width * image.height > MAX_PIXELS:
                    raise DocumentError(
                        f"image too large: {image.width}x{image.height} pixels "
                        f"(the limit is {MAX_PIXELS:,})"
                    )
                out = io.BytesIO()
                image.convert("L").save(out, format="PNG")
                frames.append(out.getvalue())
                if len(frames) >= 500:
                    break
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        reason = (
            "too many pixels" if isinstance(exc, Image.DecompressionBombError) else "cannot read it"
        )
        raise DocumentError(f"damaged {kind or 'image'} image: {reason}") from None
    return frames


def render_pdf_page(pdf: object, index: int) -> bytes:
    """One page of an open pypdfium2 document as a PNG at RENDER_DPI."""
    import io

    page = pdf[index]  # type: ignore[index]
    try:
        width, height = page.get_size()
        scale = RENDER_DPI / 72
        while width * height * scale * scale > MAX_PIXELS and scale > 0.5:
            scale /= 1.5
        bitmap = page.render(scale=scale, grayscale=True)
        image = bitmap.to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    finally:
        page.close()
