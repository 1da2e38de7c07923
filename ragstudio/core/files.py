"""Plain file helpers shared by the layers above."""

from __future__ import annotations

from pathlib import Path


def directory_bytes(*roots: Path) -> int:
    """Bytes of the files under these directories (missing ones count 0)."""
    return sum(
        p.stat().st_size for root in roots if root.exists() for p in root.rglob("*") if p.is_file()
    )
