"""Plain file helpers shared by the layers above."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path


def directory_bytes(*roots: Path) -> int:
    """Bytes of the files under these directories (missing ones count 0)."""
    return sum(
        p.stat().st_size for root in roots if root.exists() for p in root.rglob("*") if p.is_file()
    )


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def app_version(root: Path) -> str:
    """The version ``root``/pyproject.toml gives the app (it is not installed as a package)."""
    pyproject = Path(root) / "pyproject.toml"
    return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
